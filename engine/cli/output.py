"""Where and how a command prints: rich or plain text, JSON, tables, states and durations."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec
from rich.console import Console, RenderableType
from rich.json import JSON
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from engine import FailureDetails, WorkflowState, WorkflowStatus

DETAIL_WIDTH = 60
"""Payloads longer than this are shortened in tables."""

_STATUS_STYLES = {
    WorkflowStatus.PENDING: "yellow",
    WorkflowStatus.RUNNING: "cyan",
    WorkflowStatus.COMPLETED: "green",
    WorkflowStatus.FAILED: "bold red",
    WorkflowStatus.TERMINATED: "magenta",
    WorkflowStatus.SUSPENDED: "yellow",
    WorkflowStatus.STALLED: "bold red",
    WorkflowStatus.CONTINUED_AS_NEW: "blue",
}


class Output:
    """Where a command prints: rich tables and colours on a terminal, plain text otherwise.

    Plain text is chosen when stdout is not a terminal, with ``--no-color`` or NO_COLOR;
    FORCE_COLOR forces the rich form (rich reads both variables).
    """

    def __init__(self, args: argparse.Namespace) -> None:
        self.console = Console(highlight=False, no_color=True if args.no_color else None)
        self.rich = self.console.is_terminal and not self.console.no_color

    def plain(self, text: str = "") -> None:
        print(text, flush=True)

    def json(self, value: Any, *, indent: int | None = 2) -> None:
        print(json.dumps(value, indent=indent, ensure_ascii=False), flush=True)

    def show(self, renderable: RenderableType) -> None:
        self.console.print(renderable)


# ---------------------------------------------------------------- text of values


def time_text(when: datetime) -> str:
    """A UTC time to the millisecond: ``2026-01-31 12:00:00.123Z``."""
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def duration_text(seconds: float) -> str:
    """A short human duration: ``850ms``, ``2.31s``, ``4m05s``, ``3h12m``."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def delta_text(seconds: float) -> str:
    """The time since an earlier event: ``+15ms``."""
    return "+" + duration_text(seconds)


def shorten(text: str, width: int = DETAIL_WIDTH) -> str:
    """``text`` on one line, cut to ``width`` characters with ``...``."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def failure_text(failure: FailureDetails) -> str:
    """``Type: message`` of a failure."""
    return f"{failure.type}: {failure.message}" if failure.message else failure.type


def _pretty_json(text: str) -> str:
    """JSON text indented for reading (scalars stay on one line)."""
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except json.JSONDecodeError:
        return text


def status_text(status: WorkflowStatus) -> Text:
    """A status in its colour."""
    return Text(status.value, style=_STATUS_STYLES[status])


# ------------------------------------------------------------------------ tables


def plain_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table: left-aligned columns, a dashed rule under the header."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def rich_table(
    headers: Sequence[str], rows: Sequence[Sequence[str | Text]], *, title: str | None = None
) -> Table:
    """A rich table with a bold header and a left-aligned title."""
    table = Table(*headers, title=title, header_style="bold", title_justify="left")
    for row in rows:
        table.add_row(*row)
    return table


# ------------------------------------------------------------------------ states


def _json_value(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def state_as_json(state: WorkflowState) -> dict[str, Any]:
    """An instance's state as a JSON object (payloads as JSON values)."""
    failure = state.failure_details
    return {
        "instance_id": state.instance_id,
        "name": state.name,
        "runtime_status": state.runtime_status.value,
        "created_at": state.created_at.isoformat(),
        "last_updated_at": state.last_updated_at.isoformat(),
        "input": _json_value(state.serialized_input),
        "output": _json_value(state.serialized_output),
        "custom_status": _json_value(state.serialized_custom_status),
        "failure_details": None if failure is None else msgspec.to_builtins(failure),
    }


def _payloads(state: WorkflowState) -> list[tuple[str, str]]:
    return [
        (label, payload)
        for label, payload in (
            ("input", state.serialized_input),
            ("output", state.serialized_output),
            ("custom status", state.serialized_custom_status),
        )
        if payload is not None
    ]


def state_lines(state: WorkflowState) -> list[str]:
    """``label: value`` lines; JSON payloads pretty-printed, continued under their value."""
    fields = [
        ("instance", state.instance_id),
        ("workflow", state.name),
        ("status", state.runtime_status.value),
        ("created", time_text(state.created_at)),
        ("updated", time_text(state.last_updated_at)),
    ]
    fields += [(label, _pretty_json(payload)) for label, payload in _payloads(state)]
    if state.failure_details is not None:
        fields.append(("failure", failure_text(state.failure_details)))
    width = max(len(label) for label, _ in fields) + 1
    lines = []
    for label, value in fields:
        first, *rest = value.splitlines() or [""]
        lines.append(f"{(label + ':').ljust(width)} {first}")
        lines += [" " * (width + 1) + line for line in rest]
    return lines


def state_panel(state: WorkflowState) -> Panel:
    """An instance's state as a rich panel titled with its id."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("workflow", state.name)
    grid.add_row("status", status_text(state.runtime_status))
    grid.add_row("created", time_text(state.created_at))
    grid.add_row("updated", time_text(state.last_updated_at))
    for label, payload in _payloads(state):
        try:
            grid.add_row(label, JSON(payload, indent=2))
        except json.JSONDecodeError:
            grid.add_row(label, payload)
    failure = state.failure_details
    if failure is not None:
        grid.add_row("failure", Text(failure_text(failure), style="red"))
        if failure.stack:
            grid.add_row("stack", Text(failure.stack.rstrip(), style="dim"))
    return Panel(grid, title=f"[bold]{state.instance_id}", title_align="left", expand=False)


STATE_ROW_HEADERS = ["instance", "workflow", "status", "created", "updated"]
"""The columns of ``state_row``."""


def state_row(state: WorkflowState) -> list[str]:
    """An instance as a row of a listing: id, workflow, status, created, updated."""
    return [
        state.instance_id,
        state.name,
        state.runtime_status.value,
        time_text(state.created_at),
        time_text(state.last_updated_at),
    ]


def rich_state_row(state: WorkflowState) -> list[str | Text]:
    """``state_row`` with the status in its colour."""
    row: list[str | Text] = [*state_row(state)]
    row[2] = status_text(state.runtime_status)
    return row


def print_final(out: Output, state: WorkflowState) -> None:
    """Status, output and failure of a finished instance, for ``start --wait`` and ``watch``."""
    if out.rich:
        out.show(state_panel(state))
        return
    out.plain(f"status: {state.runtime_status.value}")
    if state.serialized_output is not None:
        out.plain(f"output: {state.serialized_output}")
    if state.failure_details is not None:
        out.plain(f"failure: {failure_text(state.failure_details)}")
