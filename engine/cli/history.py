"""An instance's history as ``jetloom history`` shows it: one row per event, with the time
since the previous event and, on events that close something, how long it took."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
from rich.table import Table
from rich.text import Text

from engine import (
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    ChildWorkflowScheduled,
    ExecutionCompleted,
    ExecutionStarted,
    FailureDetails,
    HistoryEvent,
    TaskCompleted,
    TaskFailed,
    TaskScheduled,
    TimerCreated,
    TimerFired,
    WorkflowStatus,
)
from engine.cli.output import delta_text, duration_text, failure_text, shorten, time_text

_SKIPPED_FIELDS = frozenset(
    {
        "timestamp",
        "execution_id",
        "task_execution_id",
        "traceparent",
        "tracestate",
        "task_id",
        "timer_id",
    }
)
"""Event fields too noisy for the history table, or shown in their own column (``--json``
shows everything)."""

_CLOSING_EVENTS = (
    TaskCompleted,
    TaskFailed,
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    TimerFired,
)
"""Events that close what a scheduling event opened (their row shows ``took=``)."""

HEADERS = ["#", "time", "delta", "task", "type", "details"]


def event_type(event: HistoryEvent) -> str:
    """The event's tag, e.g. ``task_scheduled``."""
    return str(type(event).__struct_config__.tag)


def _field_text(value: Any) -> str:
    if isinstance(value, msgspec.Raw):
        return shorten(bytes(value).decode())
    if isinstance(value, FailureDetails):
        return shorten(failure_text(value))
    if isinstance(value, datetime):
        return time_text(value)
    if isinstance(value, msgspec.Struct):
        return shorten(msgspec.json.encode(value).decode())
    if isinstance(value, tuple | list):
        return ",".join(map(str, value))
    return str(value)


def event_details(event: HistoryEvent) -> str:
    """``key=value`` pairs of an event's interesting fields (defaults and ids left out)."""
    parts = []
    for field in msgspec.structs.fields(event):
        if field.name in _SKIPPED_FIELDS:
            continue
        value = getattr(event, field.name)
        if value == field.default or (field.name == "input" and bytes(value) == b"null"):
            continue
        parts.append(f"{field.name}={_field_text(value)}")
    return " ".join(parts)


def task_of(event: HistoryEvent) -> str:
    """The task id an event belongs to (``t<n>`` for timers), or ``""``."""
    if isinstance(event, TimerCreated | TimerFired):
        return f"t{event.timer_id}"
    task_id = getattr(event, "task_id", None)
    return "" if task_id is None else str(task_id)


@dataclass(frozen=True)
class HistoryRow:
    """One event as the history table shows it."""

    index: int
    """The event's id: its position in the run's history (the ``#`` column)."""
    event: HistoryEvent
    delta: float | None
    """Seconds since the latest event before it, never negative (None for the first)."""
    took: float | None
    """Seconds since the event that opened what this one closes (task, timer, child, run)."""

    @property
    def details(self) -> str:
        details = event_details(self.event)
        if self.took is None:
            return details
        return f"took={duration_text(self.took)} {details}".rstrip()


def history_rows(events: Sequence[HistoryEvent]) -> list[HistoryRow]:
    """The rows of ``events``, timing what each closing event closes."""
    opened: dict[str, datetime] = {}
    rows = []
    latest: datetime | None = None
    for index, event in enumerate(events):
        key = task_of(event)
        took: float | None = None
        if isinstance(event, ExecutionStarted):
            opened["run"] = event.timestamp
        elif isinstance(event, TaskScheduled | ChildWorkflowScheduled | TimerCreated):
            opened[key] = event.timestamp
        elif isinstance(event, _CLOSING_EVENTS):
            start = opened.get(key)
            took = None if start is None else (event.timestamp - start).total_seconds()
        elif isinstance(event, ExecutionCompleted) and "run" in opened:
            took = (event.timestamp - opened["run"]).total_seconds()
        # An event another process stamped (an activity's result, a raised event) may carry
        # a time just before the task that recorded it: its delta is 0, and the next delta
        # counts from the latest time seen, so the deltas add up to the time elapsed.
        delta = None if latest is None else max(0.0, (event.timestamp - latest).total_seconds())
        latest = event.timestamp if latest is None else max(latest, event.timestamp)
        rows.append(HistoryRow(index, event, delta, took))
    return rows


def _event_style(event: HistoryEvent) -> str:
    if isinstance(event, TaskFailed | ChildWorkflowFailed):
        return "red"
    if isinstance(event, ExecutionCompleted):
        return "green" if event.status == WorkflowStatus.COMPLETED.value else "bold red"
    if isinstance(event, TaskCompleted | ChildWorkflowCompleted | TimerFired):
        return "green"
    return ""


def history_as_json(rows: Sequence[HistoryRow]) -> list[dict[str, Any]]:
    """The events as tagged JSON objects, each with its ``event_id`` (its position, what
    ``jetloom rerun --from-event`` takes) and ``delta_s`` / ``took_s`` added."""
    events: list[dict[str, Any]] = msgspec.json.decode(
        msgspec.json.encode([row.event for row in rows])
    )
    for event, row in zip(events, rows, strict=True):
        event["event_id"] = row.index
        event["delta_s"] = row.delta
        event["took_s"] = row.took
    return events


def history_table(rows: Sequence[HistoryRow], instance_id: str) -> Table:
    """The rows as a rich table, event types coloured by outcome."""
    table = Table(*HEADERS, header_style="bold", title=f"history of {instance_id}")
    for row in rows:
        table.add_row(
            str(row.index),
            time_text(row.event.timestamp),
            "" if row.delta is None else delta_text(row.delta),
            task_of(row.event),
            Text(event_type(row.event), style=_event_style(row.event)),
            row.details,
        )
    return table


def plain_history_rows(rows: Sequence[HistoryRow]) -> list[list[str]]:
    """The rows as plain text cells (``-`` where a cell is empty) under ``HEADERS``."""
    return [
        [
            str(row.index),
            time_text(row.event.timestamp),
            "-" if row.delta is None else delta_text(row.delta),
            task_of(row.event) or "-",
            event_type(row.event),
            row.details,
        ]
        for row in rows
    ]
