"""The ``jetloom`` command line: host workflows, serve Dapr's HTTP API, inspect and steer instances.

``jetloom dev app.py`` hosts every ``WorkflowRuntime`` found in a module (with an embedded
nats-server unless a NATS URL is given); ``serve-http`` serves Dapr's workflow HTTP API
(engine/_http.py); ``start``, ``status``, ``history``, ``watch``, ``raise``, ``terminate``,
``pause``, ``resume``, ``purge``, ``list`` and ``stats`` talk to instances through a
``WorkflowClient``. On a terminal, output is rich tables and colours; when stdout is not a
terminal, with ``--no-color`` or NO_COLOR, it is plain text (stable for scripts), and ``--json``
is machine-readable everywhere. Every failure is one ``error: ...`` line on stderr and exit
code 1 (usage mistakes exit 2, as with any argparse program); ``JETLOOM_DEBUG=1`` shows
tracebacks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import importlib.util
import json
import logging
import os
import signal
import socket
import ssl
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js.api import ConsumerInfo
from rich.console import Console, RenderableType
from rich.json import JSON
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

import observability
from brokers import InvalidNatsAuthError, JetStreamBroker, NatsAuth, Subjects, connect_nats
from brokers._auth import ENVIRONMENT, OPTIONS, with_default_auth
from brokers._jetstream import NatsAuthorizationError, NatsTlsError, redact_url
from brokers._server import EmbeddedNatsServer, free_port
from engine._client import WorkflowClient
from engine._errors import (
    InstanceAlreadyRunningError,
    InstanceFinishedError,
    InstanceNotFoundError,
    InvalidInstanceIdError,
)
from engine._events import (
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
)
from engine._http import build_app
from engine._loop import run as run_loop
from engine._runtime import WorkflowRuntime
from engine._state import WorkflowState, WorkflowStatus, decode_record
from engine.http.console import DEFAULT_JAEGER_URL, add_console, serve_app

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
DEFAULT_PREFIX = "jetloom"
DEV_DEFAULT_PORT = 4222
"""``jetloom dev`` serves on NATS's usual port, so the other commands reach it by default."""
HTTP_DEFAULT_PORT = 3500
"""``jetloom serve-http`` listens where a Dapr sidecar's HTTP API does."""
LIST_DEFAULT_PAGE_SIZE = 20
"""Instances per page of ``list --page`` without ``--limit``."""

_DETAIL_WIDTH = 60
"""Payloads longer than this are shortened in tables."""

_HISTORY_SKIPPED_FIELDS = frozenset(
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


class CliError(Exception):
    """A failure to report as one ``error: ...`` line on stderr (exit code 1)."""


# ------------------------------------------------------------------ connecting


def _nats_url(args: argparse.Namespace) -> str:
    return str(args.nats_url or os.environ.get("NATS_URL") or DEFAULT_NATS_URL)


async def _ignore_nats_error(exc: Exception) -> None:
    """Connection trouble is reported once, as the command's error, not per attempt."""


async def _ignore_nats_event() -> None:
    """A command's own close is not worth a 'disconnected' log line on its output."""


def _nats_auth(args: argparse.Namespace) -> NatsAuth:
    """The credentials and TLS files of ``--user``, ``--creds``, ``--tlsca``, ...; each option
    not given falls back to its environment variable (NATS_USER, NATS_CREDS, NATS_CA, ...),
    as with the nats CLI."""
    given = {
        name: getattr(args, name, None) or os.environ.get(variable) or None
        for name, variable in ENVIRONMENT.items()
    }
    try:
        return NatsAuth(**given)
    except InvalidNatsAuthError as exc:
        raise CliError(str(exc)) from None


def _auth_options(args: argparse.Namespace) -> dict[str, Any]:
    """``nats.connect`` options for the credentials and TLS files of the command line."""
    try:
        return _nats_auth(args).connect_options()
    except InvalidNatsAuthError as exc:
        raise CliError(str(exc)) from None


def _cli_connect_options() -> dict[str, Any]:
    """Fail fast instead of the runtime's reconnect-forever.

    nats-py only gives up on a server once it failed more than ``max_reconnect_attempts``
    times and treats 0 as "no limit", so 1 is the smallest bound (two quick attempts).
    """
    return {
        "allow_reconnect": False,
        "max_reconnect_attempts": 1,
        "reconnect_time_wait": 0.1,
        "connect_timeout": 2,
        "error_cb": _ignore_nats_error,
        "disconnected_cb": _ignore_nats_event,
        "reconnected_cb": _ignore_nats_event,
    }


def _unreachable(url: str) -> CliError:
    return CliError(
        f"cannot connect to NATS at {redact_url(url)}; start a server there (nats-server -js), "
        "run 'jetloom dev' (it embeds one), or point --nats-url / NATS_URL at yours"
    )


def _tls_failed(url: str, exc: ssl.SSLError) -> CliError:
    detail = exc.reason or str(exc)
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = f"certificate verify failed: {exc.verify_message}"
    return CliError(
        f"TLS with NATS at {redact_url(url)} failed ({detail}); check --tlsca "
        "(NATS_CA: the CA that signed the server's certificate) and --tlscert/--tlskey "
        "(NATS_CERT/NATS_KEY: the client certificate the server may require)"
    )


async def _connect_fast(url: str, auth_options: dict[str, Any]) -> NATS:
    """A connection with the CLI's fail-fast options; every failure is one clear CliError."""
    try:
        return await connect_nats(url, **_cli_connect_options(), **auth_options)
    except NatsAuthorizationError as exc:
        raise CliError(str(exc)) from None
    except NatsTlsError as exc:
        raise _tls_failed(url, exc.ssl_error) from None
    except ssl.SSLError as exc:
        raise _tls_failed(url, exc) from None
    except ConnectionRefusedError:
        raise _unreachable(url) from None
    except (ConnectionError, nats.errors.UnexpectedEOF):  # reset, broken pipe: a server hung up
        raise CliError(
            f"NATS at {redact_url(url)} closed the connection before it was established; a "
            "server that requires a TLS client certificate does that: give --tlscert and "
            "--tlskey (NATS_CERT, NATS_KEY)"
        ) from None
    except (nats.errors.Error, OSError, TimeoutError):
        raise _unreachable(url) from None


async def _check_reachable(url: str, auth_options: dict[str, Any]) -> None:
    """Connect once with the CLI's fail-fast options, so a wrong URL is one clear error."""
    nc = await _connect_fast(url, auth_options)
    await nc.close()


def _check_prefix(args: argparse.Namespace) -> None:
    try:
        Subjects(args.prefix)
    except ValueError as exc:
        raise CliError(f"--prefix: {exc}") from None


@dataclass(frozen=True)
class _Session:
    """A command's connection: the client, and a broker on the same connection for what the
    client does not offer (watching the KV bucket, consumer statistics)."""

    client: WorkflowClient
    broker: JetStreamBroker


@contextlib.asynccontextmanager
async def _session(args: argparse.Namespace) -> AsyncIterator[_Session]:
    """A client and broker on ``--nats-url`` / ``--prefix`` that fail fast when no server
    answers."""
    url = _nats_url(args)
    _check_prefix(args)
    nc = await _connect_fast(url, _auth_options(args))
    client = WorkflowClient(nc, prefix=args.prefix)
    shown = redact_url(url)
    try:
        yield _Session(client, JetStreamBroker(nc, Subjects(args.prefix)))
    except (nats.errors.NoRespondersError, nats.js.errors.ServiceUnavailableError):
        raise CliError(
            f"the NATS server at {shown} has no JetStream; start nats-server with -js "
            "(or use 'jetloom dev')"
        ) from None
    except (nats.errors.ConnectionClosedError, nats.errors.UnexpectedEOF):
        raise CliError(f"lost the connection to NATS at {shown}; is the server still up?") from None
    except nats.errors.TimeoutError:
        raise CliError(f"NATS at {shown} did not answer in time; is JetStream healthy?") from None
    finally:
        with contextlib.suppress(Exception):
            await client.close()


@contextlib.asynccontextmanager
async def _connected(args: argparse.Namespace) -> AsyncIterator[WorkflowClient]:
    """A client on ``--nats-url`` / ``--prefix`` that fails fast when no server answers."""
    async with _session(args) as session:
        yield session.client


# ------------------------------------------------------------------ formatting


class _Output:
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


def _parse_json_option(option: str, text: str | None) -> Any:
    """The value of a JSON-valued option, or a CliError naming the option.

    ``@path`` reads the JSON from a file and ``@-`` from standard input (as curl does), for
    values too large or awkward for a command line.
    """
    if text is None:
        return None
    source = ""
    if text.startswith("@"):
        source = text[1:]
        try:
            text = sys.stdin.read() if source == "-" else Path(source).read_text()
        except OSError as exc:
            raise CliError(f"{option} {text}: cannot read {source!r} ({exc.strerror})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        where = f" in {'standard input' if source == '-' else repr(source)}" if source else ""
        raise CliError(
            f"{option} is not valid JSON{where} ({exc}); quote strings as JSON, "
            f"e.g. {option} '\"text\"' or {option} '{{\"qty\": 2}}', or use {option} @file.json"
        ) from None


def _time(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def _duration(seconds: float) -> str:
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


def _delta(seconds: float) -> str:
    """A signed duration; negative when events come from workers with different clocks."""
    return ("+" if seconds >= 0 else "-") + _duration(abs(seconds))


def _short(text: str, width: int = _DETAIL_WIDTH) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _failure_text(failure: FailureDetails) -> str:
    return f"{failure.type}: {failure.message}" if failure.message else failure.type


def _pretty_json(text: str) -> str:
    """JSON text indented for reading (scalars stay on one line)."""
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except json.JSONDecodeError:
        return text


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table: left-aligned columns, a dashed rule under the header."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def _rich_table(
    headers: Sequence[str], rows: Sequence[Sequence[str | Text]], *, title: str | None = None
) -> Table:
    table = Table(*headers, title=title, header_style="bold", title_justify="left")
    for row in rows:
        table.add_row(*row)
    return table


def _status_text(status: WorkflowStatus) -> Text:
    return Text(status.value, style=_STATUS_STYLES[status])


def _json_value(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _state_as_json(state: WorkflowState) -> dict[str, Any]:
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


def _state_lines(state: WorkflowState) -> list[str]:
    """``label: value`` lines; JSON payloads pretty-printed, continued under their value."""
    fields = [
        ("instance", state.instance_id),
        ("workflow", state.name),
        ("status", state.runtime_status.value),
        ("created", _time(state.created_at)),
        ("updated", _time(state.last_updated_at)),
    ]
    fields += [(label, _pretty_json(payload)) for label, payload in _payloads(state)]
    if state.failure_details is not None:
        fields.append(("failure", _failure_text(state.failure_details)))
    width = max(len(label) for label, _ in fields) + 1
    lines = []
    for label, value in fields:
        first, *rest = value.splitlines() or [""]
        lines.append(f"{(label + ':').ljust(width)} {first}")
        lines += [" " * (width + 1) + line for line in rest]
    return lines


def _state_panel(state: WorkflowState) -> Panel:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("workflow", state.name)
    grid.add_row("status", _status_text(state.runtime_status))
    grid.add_row("created", _time(state.created_at))
    grid.add_row("updated", _time(state.last_updated_at))
    for label, payload in _payloads(state):
        try:
            grid.add_row(label, JSON(payload, indent=2))
        except json.JSONDecodeError:
            grid.add_row(label, payload)
    failure = state.failure_details
    if failure is not None:
        grid.add_row("failure", Text(_failure_text(failure), style="red"))
        if failure.stack:
            grid.add_row("stack", Text(failure.stack.rstrip(), style="dim"))
    return Panel(grid, title=f"[bold]{state.instance_id}", title_align="left", expand=False)


def _event_type(event: HistoryEvent) -> str:
    return str(type(event).__struct_config__.tag)


def _event_details(event: HistoryEvent) -> str:
    """``key=value`` pairs of an event's interesting fields (defaults and ids left out)."""
    parts = []
    for field in msgspec.structs.fields(event):
        if field.name in _HISTORY_SKIPPED_FIELDS:
            continue
        value = getattr(event, field.name)
        if value == field.default or (field.name == "input" and bytes(value) == b"null"):
            continue
        if isinstance(value, msgspec.Raw):
            text = _short(bytes(value).decode())
        elif isinstance(value, FailureDetails):
            text = _short(_failure_text(value))
        elif isinstance(value, datetime):
            text = _time(value)
        elif isinstance(value, msgspec.Struct):
            text = _short(msgspec.json.encode(value).decode())
        elif isinstance(value, tuple | list):
            text = ",".join(map(str, value))
        else:
            text = str(value)
        parts.append(f"{field.name}={text}")
    return " ".join(parts)


def _task_of(event: HistoryEvent) -> str:
    """The task id an event belongs to (``t<n>`` for timers), or ``""``."""
    if isinstance(event, TimerCreated | TimerFired):
        return f"t{event.timer_id}"
    task_id = getattr(event, "task_id", None)
    return "" if task_id is None else str(task_id)


@dataclass(frozen=True)
class _HistoryRow:
    """One event as the history table shows it."""

    index: int
    event: HistoryEvent
    delta: float | None
    """Seconds since the previous event (None for the first)."""
    took: float | None
    """Seconds since the event that opened what this one closes (task, timer, child, run)."""

    @property
    def details(self) -> str:
        details = _event_details(self.event)
        if self.took is None:
            return details
        return f"took={_duration(self.took)} {details}".rstrip()


_CLOSING_EVENTS = (
    TaskCompleted,
    TaskFailed,
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    TimerFired,
)
"""Events that close what a scheduling event opened (their row shows ``took=``)."""


def _history_rows(events: Sequence[HistoryEvent]) -> list[_HistoryRow]:
    opened: dict[str, datetime] = {}
    rows = []
    previous: datetime | None = None
    for index, event in enumerate(events):
        key = _task_of(event)
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
        delta = None if previous is None else (event.timestamp - previous).total_seconds()
        previous = event.timestamp
        rows.append(_HistoryRow(index, event, delta, took))
    return rows


def _event_style(event: HistoryEvent) -> str:
    if isinstance(event, TaskFailed | ChildWorkflowFailed):
        return "red"
    if isinstance(event, ExecutionCompleted):
        return "green" if event.status == "COMPLETED" else "bold red"
    if isinstance(event, TaskCompleted | ChildWorkflowCompleted | TimerFired):
        return "green"
    return ""


# -------------------------------------------------------------------- commands


def _print_final(out: _Output, state: WorkflowState) -> None:
    """Status, output and failure of a finished instance, for ``start --wait`` and ``watch``."""
    if out.rich:
        out.show(_state_panel(state))
        return
    out.plain(f"status: {state.runtime_status.value}")
    if state.serialized_output is not None:
        out.plain(f"output: {state.serialized_output}")
    if state.failure_details is not None:
        out.plain(f"failure: {_failure_text(state.failure_details)}")


async def _cmd_start(args: argparse.Namespace) -> int:
    out = _Output(args)
    workflow_input = _parse_json_option("--input", args.input)
    async with _connected(args) as client:
        instance_id = await client.schedule_new_workflow(
            args.workflow, input=workflow_input, instance_id=args.id
        )
        if not args.json:
            out.plain(instance_id)
        if not args.wait:
            if args.json:
                out.json({"instance_id": instance_id})
            return 0
        try:
            state = await client.wait_for_workflow_completion(instance_id, timeout=args.timeout)
        except TimeoutError:
            raise CliError(
                f"instance {instance_id!r} did not finish within {args.timeout:g}s; it keeps "
                f"running (jetloom status {instance_id}); is a worker hosting "
                f"{args.workflow!r} on prefix {args.prefix!r}?"
            ) from None
    if args.json:
        out.json(_state_as_json(state))
    else:
        _print_final(out, state)
    return 0 if state.runtime_status is WorkflowStatus.COMPLETED else 1


async def _existing_state(client: WorkflowClient, instance_id: str) -> WorkflowState:
    state = await client.get_workflow_state(instance_id)
    if state is None:
        raise InstanceNotFoundError(
            f"no instance {instance_id!r}; check the id (jetloom list shows instances)"
        )
    return state


async def _cmd_status(args: argparse.Namespace) -> int:
    out = _Output(args)
    async with _connected(args) as client:
        state = await _existing_state(client, args.instance_id)
    if args.json:
        out.json(_state_as_json(state))
    elif out.rich:
        out.show(_state_panel(state))
    else:
        out.plain("\n".join(_state_lines(state)))
    return 0


def _history_as_json(rows: Sequence[_HistoryRow]) -> list[dict[str, Any]]:
    """The events as tagged JSON objects, each with ``delta_s`` / ``took_s`` added."""
    events: list[dict[str, Any]] = msgspec.json.decode(
        msgspec.json.encode([row.event for row in rows])
    )
    for event, row in zip(events, rows, strict=True):
        event["delta_s"] = row.delta
        event["took_s"] = row.took
    return events


async def _cmd_history(args: argparse.Namespace) -> int:
    out = _Output(args)
    async with _connected(args) as client:
        await _existing_state(client, args.instance_id)
        events = await client.get_history(args.instance_id)
    rows = _history_rows(events)
    if args.json:
        out.json(_history_as_json(rows))
        return 0
    headers = ["#", "time", "delta", "task", "type", "details"]
    if out.rich:
        table = Table(*headers, header_style="bold", title=f"history of {args.instance_id}")
        for row in rows:
            table.add_row(
                str(row.index),
                _time(row.event.timestamp),
                "" if row.delta is None else _delta(row.delta),
                _task_of(row.event),
                Text(_event_type(row.event), style=_event_style(row.event)),
                row.details,
            )
        out.show(table)
        return 0
    plain_rows = [
        [
            str(row.index),
            _time(row.event.timestamp),
            "-" if row.delta is None else _delta(row.delta),
            _task_of(row.event) or "-",
            _event_type(row.event),
            row.details,
        ]
        for row in rows
    ]
    out.plain(_table(headers, plain_rows))
    return 0


async def _steer(
    args: argparse.Namespace,
    verb: str,
    action: Callable[[WorkflowClient], Awaitable[object]],
) -> int:
    """Run a steering action; the client refuses unknown and finished instances."""
    async with _connected(args) as client:
        try:
            await action(client)
        except InstanceFinishedError as exc:
            raise CliError(
                f"instance {args.instance_id!r} is already {exc.status}; "
                f"there is nothing to {verb}"
            ) from None
    return 0


def _report(args: argparse.Namespace, message: str, **fields: Any) -> None:
    """What a steering command did: one line, or a JSON object with ``--json``."""
    out = _Output(args)
    if args.json:
        out.json({"instance_id": args.instance_id, **fields})
    elif out.rich:
        out.show(Text(message, style="green"))
    else:
        out.plain(message)


async def _cmd_raise(args: argparse.Namespace) -> int:
    data = _parse_json_option("--data", args.data)
    await _steer(
        args,
        "raise an event to",
        lambda c: c.raise_workflow_event(args.instance_id, args.event, data=data),
    )
    _report(
        args,
        f"raised event {args.event!r} to {args.instance_id}",
        action="raise",
        event=args.event,
        data=data,
    )
    return 0


async def _cmd_terminate(args: argparse.Namespace) -> int:
    output = _parse_json_option("--output", args.output)
    await _steer(
        args,
        "terminate",
        lambda c: c.terminate_workflow(args.instance_id, output=output, recursive=args.recursive),
    )
    _report(
        args,
        f"terminating {args.instance_id}",
        action="terminate",
        output=output,
        recursive=args.recursive,
    )
    return 0


async def _cmd_pause(args: argparse.Namespace) -> int:
    await _steer(args, "pause", lambda c: c.pause_workflow(args.instance_id))
    _report(args, f"pausing {args.instance_id}", action="pause")
    return 0


async def _cmd_resume(args: argparse.Namespace) -> int:
    await _steer(args, "resume", lambda c: c.resume_workflow(args.instance_id))
    _report(args, f"resuming {args.instance_id}", action="resume")
    return 0


async def _cmd_purge(args: argparse.Namespace) -> int:
    async with _connected(args) as client:
        try:
            purged = await client.purge_workflow(args.instance_id)
        except InstanceNotFoundError:
            raise InstanceNotFoundError(
                f"no instance {args.instance_id!r} to purge; check the id "
                "(jetloom list shows instances)"
            ) from None
    _report(
        args,
        f"purged {args.instance_id} ({purged} instance{'s' if purged != 1 else ''})",
        action="purge",
        purged=purged,
    )
    return 0


def _page_bounds(args: argparse.Namespace) -> tuple[int, int | None]:
    """(offset, limit) from ``--offset/--limit`` or ``--page`` (1-based, ``--limit`` per page)."""
    if args.page is not None:
        size = args.limit if args.limit is not None else LIST_DEFAULT_PAGE_SIZE
        return (args.page - 1) * size, size
    return args.offset or 0, args.limit


async def _cmd_list(args: argparse.Namespace) -> int:
    out = _Output(args)
    statuses = set(args.status or [])
    async with _connected(args) as client:
        states = [
            s
            async for s in client.list_workflows(workflow_name=args.workflow)
            if not statuses or s.runtime_status in statuses
        ]
    states.sort(key=lambda s: (s.created_at, s.instance_id), reverse=args.newest_first)
    offset, limit = _page_bounds(args)
    page = states[offset : None if limit is None else offset + limit]
    if args.json:
        out.json([_state_as_json(s) for s in page])
        return 0
    if not page:
        out.plain("no instances" if not states else f"no instances on this page ({len(states)})")
        return 0
    footer = ""
    if len(page) < len(states):
        footer = f"instances {offset + 1}-{offset + len(page)} of {len(states)}"
        if offset + len(page) < len(states):
            footer += f"; next: --offset {offset + len(page)}" + (
                f" --limit {limit}" if limit is not None else ""
            )
    headers = ["instance", "workflow", "status", "created", "updated"]
    if out.rich:
        table = _rich_table(
            headers,
            [
                [
                    s.instance_id,
                    s.name,
                    _status_text(s.runtime_status),
                    _time(s.created_at),
                    _time(s.last_updated_at),
                ]
                for s in page
            ],
        )
        if footer:
            table.caption = footer
        out.show(table)
        return 0
    rows = [
        [
            s.instance_id,
            s.name,
            s.runtime_status.value,
            _time(s.created_at),
            _time(s.last_updated_at),
        ]
        for s in page
    ]
    out.plain(_table(headers, rows))
    if footer:
        out.plain(footer)
    return 0


# ----------------------------------------------------------------------- watch


def _watch_line(state: WorkflowState) -> str:
    return (
        f"{_time(state.last_updated_at)}  {state.instance_id}  {state.name}  "
        f"{state.runtime_status.value}"
    )


class _Watch:
    """Reads updates until the caller's deadline or a stop signal (SIGINT, SIGTERM).

    The next-update task lives across calls, so giving up on a wait never drops an update.
    """

    def __init__(self, timeout: float | None) -> None:
        loop = asyncio.get_running_loop()
        self._deadline = None if timeout is None else loop.time() + timeout
        self._stop = asyncio.Event()
        self._next: asyncio.Task[Any] | None = None

    async def __aenter__(self) -> _Watch:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stop.set)
        return self

    async def __aexit__(self, *exc: object) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if self._next is not None:
            self._next.cancel()
            await asyncio.wait([self._next])  # the reader it drives stops before it is closed

    async def next(self, update: Callable[[], Awaitable[Any]]) -> tuple[bool, Any]:
        """(True, what ``update()`` gave), or (False, None) once stopped or out of time."""
        if self._next is None:
            self._next = asyncio.ensure_future(update())
        stopper = asyncio.ensure_future(self._stop.wait())
        remaining = None
        if self._deadline is not None:
            remaining = max(0.0, self._deadline - asyncio.get_running_loop().time())
        try:
            await asyncio.wait(
                [self._next, stopper], timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stopper.cancel()
        if self._stop.is_set() or not self._next.done():
            return False, None
        task, self._next = self._next, None
        return True, task.result()


def _entry_state(entry: Any) -> WorkflowState | None:
    """The state in a KV watch entry (None for a delete/purge)."""
    if entry.operation is not None or not entry.value:
        return None
    return WorkflowState.from_record(decode_record(entry.value), fetch_payloads=True)


async def _watch_instance(out: _Output, session: _Session, args: argparse.Namespace) -> int:
    await _existing_state(session.client, args.instance_id)
    kv = await session.broker.instances()
    watcher = await kv.watch(args.instance_id)
    shown: tuple[object, ...] | None = None
    last: WorkflowState | None = None
    live = Live(console=out.console, auto_refresh=False) if out.rich and not args.json else None
    try:
        async with _Watch(None if args.once else args.timeout) as watch:
            if live is not None:
                live.start()
            while True:
                ok, entry = await watch.next(
                    lambda: watcher.updates(timeout=None)  # type: ignore[no-untyped-call]
                )
                if not ok:
                    break
                if entry is None:
                    if args.once and last is not None:
                        break
                    continue
                state = _entry_state(entry)
                if state is None:
                    raise CliError(f"instance {args.instance_id!r} was purged while watching")
                key = (
                    state.runtime_status,
                    state.last_updated_at,
                    state.serialized_custom_status,
                )
                if key != shown:
                    shown, last = key, state
                    if args.json:
                        out.json(_state_as_json(state), indent=None)
                    elif live is not None:
                        live.update(_state_panel(state), refresh=True)
                    else:
                        out.plain(_watch_line(state))
                if args.once or state.runtime_status.is_terminal:
                    break
    finally:
        if live is not None:
            live.stop()
        await watcher.stop()  # type: ignore[no-untyped-call]
    if last is None or not last.runtime_status.is_terminal:
        return 0
    if not args.json and live is None:
        _print_final(out, last)
    return 0 if last.runtime_status is WorkflowStatus.COMPLETED else 1


def _running_table(running: dict[str, WorkflowState], finished: list[WorkflowState]) -> Table:
    states = sorted(running.values(), key=lambda s: (s.created_at, s.instance_id))
    rows: list[list[str | Text]] = [
        [
            s.instance_id,
            s.name,
            _status_text(s.runtime_status),
            _time(s.created_at),
            _time(s.last_updated_at),
        ]
        for s in [*states, *finished[-10:]]
    ]
    return _rich_table(
        ["instance", "workflow", "status", "created", "updated"],
        rows,
        title=f"{len(running)} running (Ctrl-C stops)",
    )


async def _watch_all(out: _Output, session: _Session, args: argparse.Namespace) -> int:
    records = session.broker.read_records()
    running: dict[str, WorkflowState] = {}
    finished: list[WorkflowState] = []
    initial = True
    live = Live(console=out.console, auto_refresh=False) if out.rich and not args.json else None
    try:
        async with _Watch(args.timeout) as watch:
            if live is not None:
                live.start()
            while True:
                ok, entry = await watch.next(lambda: anext(records))
                if not ok:
                    break
                if entry is None:  # the current values are all delivered
                    initial = False
                    if live is not None:
                        live.update(_running_table(running, finished), refresh=True)
                    if args.once:
                        break
                    continue
                if entry.value is None:  # purged
                    running.pop(entry.key, None)
                    continue
                state = WorkflowState.from_record(decode_record(entry.value), fetch_payloads=True)
                if state.runtime_status.is_terminal:
                    if running.pop(state.instance_id, None) is None or initial:
                        continue  # finished before the watch began: not running
                    finished.append(state)
                else:
                    running[state.instance_id] = state
                if args.json:
                    out.json(_state_as_json(state), indent=None)
                elif live is None:
                    out.plain(_watch_line(state))
                elif not initial:
                    live.update(_running_table(running, finished), refresh=True)
    finally:
        if live is not None:
            live.stop()
        await records.aclose()
    return 0


async def _cmd_watch(args: argparse.Namespace) -> int:
    out = _Output(args)
    async with _session(args) as session:
        if args.instance_id is None:
            return await _watch_all(out, session, args)
        return await _watch_instance(out, session, args)


# ----------------------------------------------------------------------- stats


def _consumer_as_json(info: ConsumerInfo, prefix_of_activities: str) -> dict[str, Any]:
    name = info.name
    kind = "activities" if name.startswith(prefix_of_activities) else "workflows"
    return {
        "consumer": name,
        "kind": kind,
        "task_queue": name[len(prefix_of_activities) :] if kind == "activities" else None,
        "pending": info.num_pending or 0,
        "in_flight": info.num_ack_pending or 0,
        "redelivered": info.num_redelivered or 0,
        "waiting_pulls": info.num_waiting or 0,
        "delivered": (info.delivered.consumer_seq or 0) if info.delivered else 0,
    }


async def _cmd_stats(args: argparse.Namespace) -> int:
    out = _Output(args)
    async with _session(args) as session:
        by_status: Counter[WorkflowStatus] = Counter()
        by_workflow: dict[str, Counter[WorkflowStatus]] = {}
        async for state in session.client.list_workflows():
            by_status[state.runtime_status] += 1
            by_workflow.setdefault(state.name, Counter())[state.runtime_status] += 1
        subjects = session.broker.subjects
        js = session.broker.js
        infos = await js.consumers_info(subjects.work_stream)
        work = await js.stream_info(subjects.work_stream)
        dead = await js.stream_info(subjects.deadletter_stream)
    activities_prefix = subjects.activities_consumer("")
    consumers = sorted(
        (_consumer_as_json(info, activities_prefix) for info in infos),
        key=lambda c: (c["kind"] != "workflows", c["consumer"]),
    )
    stats = {
        "instances": {
            "total": sum(by_status.values()),
            "by_status": {s.value: by_status[s] for s in WorkflowStatus},
            "by_workflow": {
                name: {s.value: n for s, n in sorted(c.items(), key=lambda i: i[0].value)}
                for name, c in sorted(by_workflow.items())
            },
        },
        "consumers": consumers,
        "streams": {
            "work": {"stream": subjects.work_stream, "messages": work.state.messages},
            "deadletter": {"stream": subjects.deadletter_stream, "messages": dead.state.messages},
        },
    }
    if args.json:
        out.json(stats)
        return 0
    status_rows = [[s.value, str(by_status[s])] for s in WorkflowStatus]
    consumer_headers = ["consumer", "task queue", "pending", "in flight", "redelivered", "waiting"]
    consumer_rows = [
        [
            str(c["consumer"]),
            str(c["task_queue"] or "-"),
            str(c["pending"]),
            str(c["in_flight"]),
            str(c["redelivered"]),
            str(c["waiting_pulls"]),
        ]
        for c in consumers
    ]
    streams_line = (
        f"work stream {subjects.work_stream}: {work.state.messages} messages; "
        f"dead letters {subjects.deadletter_stream}: {dead.state.messages}"
    )
    total = stats["instances"]["total"]  # type: ignore[index]
    if out.rich:
        out.show(
            _rich_table(
                ["status", "count"],
                [[_status_text(s), str(by_status[s])] for s in WorkflowStatus],
                title=f"instances: {total}",
            )
        )
        if consumer_rows:
            out.show(_rich_table(consumer_headers, consumer_rows, title="consumers"))
        else:
            out.show(Text("no consumers yet (no runtime has started on this prefix)", "dim"))
        out.show(Text(streams_line, style="dim"))
        return 0
    out.plain(f"instances: {total}")
    out.plain(_table(["status", "count"], status_rows))
    out.plain()
    if consumer_rows:
        out.plain(_table(consumer_headers, consumer_rows))
    else:
        out.plain("no consumers yet (no runtime has started on this prefix)")
    out.plain()
    out.plain(streams_line)
    return 0


# ------------------------------------------------------------------ serve-http


async def _serve_api_and_console(
    args: argparse.Namespace,
    url: str,
    *,
    host: str,
    port: int,
    stop: asyncio.Event,
    ready: Callable[[str, int], None],
) -> None:
    """Dapr's workflow API and the web console (at ``/``) on ``host:port`` until ``stop``."""
    # A long-running server reconnects forever, like a runtime (not the CLI's fail-fast).
    nc = await connect_nats(url, **_auth_options(args))
    client = WorkflowClient(nc, prefix=args.prefix)
    try:
        broker = JetStreamBroker(nc, Subjects(args.prefix))
        await broker.ensure_topology()
        app = build_app(client)
        add_console(app, client, broker, jaeger_url=args.jaeger_url, api_token=args.api_token)
        await serve_app(app, host=host, port=port, stop=stop, ready=ready)
    finally:
        await client.close()


async def _serve_http_until_stopped(args: argparse.Namespace, url: str) -> None:
    await _check_reachable(url, _auth_options(args))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def ready(host: str, port: int) -> None:
        guarded = "; API token required" if args.api_token else ""
        print(
            f"jetloom serve-http: listening on http://{host}:{port} "
            f"(NATS at {redact_url(url)}, prefix {args.prefix!r}); console at "
            f"http://{host}:{port}/{guarded}; Ctrl-C stops",
            flush=True,
        )

    try:
        await _serve_api_and_console(
            args, url, host=args.host, port=args.port, stop=stop, ready=ready
        )
    except OSError as exc:
        raise CliError(
            f"cannot listen on {args.host}:{args.port} ({exc.strerror or exc}); "
            "choose another --port (0 picks a free one)"
        ) from None
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def _cmd_serve_http(args: argparse.Namespace) -> int:
    _check_prefix(args)
    observability.configure(service_name="jetloom-http")
    run_loop(_serve_http_until_stopped(args, _nats_url(args)))
    print("jetloom serve-http: stopped", flush=True)
    return 0


# ------------------------------------------------------------------------- dev


def _import_target(target: str) -> ModuleType:
    """Import a dotted module name or a ``.py`` file (whose folder joins ``sys.path``)."""
    path = Path(target)
    if target.endswith(".py") or path.is_file():
        if not path.is_file():
            raise CliError(f"no such file {target!r}; give a .py file or a dotted module name")
        path = path.resolve()
        sys.path.insert(0, str(path.parent))
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            raise CliError(f"cannot load {target!r} as a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
        return module
    return importlib.import_module(target)


def _load_module(target: str) -> ModuleType:
    try:
        return _import_target(target)
    except CliError:
        raise
    except ModuleNotFoundError as exc:
        raise CliError(
            f"cannot import {target!r}: {exc}; run from the project folder or give a file path"
        ) from None
    except Exception as exc:
        tb = exc.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        where = f" ({tb.tb_frame.f_code.co_filename}:{tb.tb_lineno})" if tb else ""
        raise CliError(
            f"importing {target!r} raised {type(exc).__name__}: {exc}{where}; "
            "set JETLOOM_DEBUG=1 for the traceback"
        ) from exc


def _runtimes_in(module: ModuleType) -> list[tuple[str, WorkflowRuntime]]:
    return [(name, v) for name, v in vars(module).items() if isinstance(v, WorkflowRuntime)]


def _port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _embedded_server(args: argparse.Namespace) -> EmbeddedNatsServer:
    """The (not yet started) embedded nats-server of ``jetloom dev``; its URL is known now."""
    port = args.port if args.port is not None else DEV_DEFAULT_PORT
    if port == 0:
        port = free_port()
    elif _port_in_use(port):
        raise CliError(
            f"port {port} on 127.0.0.1 is taken (a nats-server already running there? then "
            f"pass --nats-url nats://127.0.0.1:{port}); or choose another with --port "
            "(0 picks a free one)"
        )
    return EmbeddedNatsServer(store_dir=args.store, port=port)


async def _serve(
    runtimes: list[WorkflowRuntime],
    ready: Callable[[], None],
    serve_console: Callable[[asyncio.Event, Callable[[str, int], None]], Coroutine[Any, Any, None]],
) -> None:
    """Run all runtimes and the console until SIGINT/SIGTERM, then shut them down gracefully.

    ``WorkflowRuntime.run`` would install one signal handler per runtime, and a later one
    replaces an earlier one, so several runtimes share one stop event here instead.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    console: asyncio.Task[None] | None = None
    try:
        started: list[WorkflowRuntime] = []
        try:
            for runtime in runtimes:
                await runtime.start()
                started.append(runtime)
            listening: asyncio.Future[str] = loop.create_future()
            console = asyncio.create_task(
                serve_console(stop, lambda host, port: listening.set_result(f"{host}:{port}"))
            )
            waiting: list[asyncio.Future[Any]] = [console, listening]
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if not listening.done():
                console.result()  # it failed to listen: raise why
            print(f"jetloom dev: console at http://{listening.result()}/", flush=True)
            ready()
            await stop.wait()
        finally:
            stop.set()
            if console is not None:
                await asyncio.gather(console, return_exceptions=True)
            await asyncio.gather(*(rt.shutdown() for rt in started), return_exceptions=True)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def _cmd_dev(args: argparse.Namespace) -> int:
    external_url = args.nats_url or os.environ.get("NATS_URL")
    if external_url and (args.port is not None or args.store is not None):
        raise CliError(
            f"--port and --store configure the embedded nats-server, but NATS_URL/--nats-url "
            f"({redact_url(str(external_url))}) says to use an existing one; drop one or the other"
        )
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # like 'python -m': modules of this project import
    # Logs, and traces/metrics when OTEL_EXPORTER_OTLP_ENDPOINT is set.
    observability.configure(service_name="jetloom-dev")
    server = None if external_url else _embedded_server(args)
    try:
        url = str(external_url) if server is None else server.url
        # Modules read these at import time (e.g. WorkflowRuntime(prefix=os.environ[...])).
        os.environ["NATS_URL"] = url
        os.environ["JETLOOM_PREFIX"] = args.prefix
        auth = _nats_auth(args)
        hosted = _find_runtimes(args.modules, url, auth)
        if server is None:
            asyncio.run(_check_reachable(url, _auth_options(args)))
            print(f"jetloom dev: NATS at {redact_url(url)}", flush=True)
        else:
            try:
                server.start()
            except (RuntimeError, FileNotFoundError) as exc:
                raise CliError(f"cannot start the embedded nats-server: {exc}") from None
            print(
                f"jetloom dev: NATS at {url} (embedded nats-server, store {server.store_dir})",
                flush=True,
            )
        for (target, name), runtime in hosted.items():
            _describe_runtime(target, name, runtime, args.prefix)

        def ready() -> None:
            hint = "" if url == DEFAULT_NATS_URL else f" --nats-url {redact_url(url)}"
            if args.prefix != DEFAULT_PREFIX:
                hint += f" --prefix {args.prefix}"
            print(
                f"jetloom dev: ready; Ctrl-C stops. In another shell: jetloom list{hint}",
                flush=True,
            )

        http_port = args.http_port
        if http_port is None:  # the usual port, or any free one if something else has it
            http_port = 0 if _port_in_use(HTTP_DEFAULT_PORT) else HTTP_DEFAULT_PORT

        async def serve_console(stop: asyncio.Event, listening: Callable[[str, int], None]) -> None:
            try:
                await _serve_api_and_console(
                    args, url, host="127.0.0.1", port=http_port, stop=stop, ready=listening
                )
            except OSError as exc:
                raise CliError(
                    f"cannot serve the console on 127.0.0.1:{http_port} ({exc.strerror or exc});"
                    " choose another --http-port (0 picks a free one)"
                ) from None

        run_loop(_serve(list(hosted.values()), ready, serve_console))
        print("jetloom dev: stopped", flush=True)
        return 0
    finally:
        if server is not None:
            server.cleanup()


def _find_runtimes(
    targets: Sequence[str], url: str, auth: NatsAuth
) -> dict[tuple[str, str], WorkflowRuntime]:
    """Import ``targets`` and collect their module-level runtimes, keyed by (target, name).

    A runtime without a URL of its own gets ``url``; one without credentials (or TLS) of its
    own gets those of the command line.
    """
    hosted: dict[tuple[str, str], WorkflowRuntime] = {}
    for target in targets:
        for name, runtime in _runtimes_in(_load_module(target)):
            if any(runtime is h for h in hosted.values()):
                continue
            if runtime.nats_url is None:
                runtime.nats_url = url
            try:
                runtime.connect_options = with_default_auth(
                    runtime.connect_options, auth, servers=runtime.nats_url
                )
            except InvalidNatsAuthError as exc:
                raise CliError(str(exc)) from None
            hosted[(target, name)] = runtime
    if not hosted:
        raise CliError(
            f"no WorkflowRuntime at module level in {', '.join(targets)}; "
            "define one there, e.g. 'wfr = WorkflowRuntime()'"
        )
    return hosted


def _describe_runtime(target: str, name: str, runtime: WorkflowRuntime, prefix: str) -> None:
    workflows = ", ".join(runtime.registry.workflow_names) or "-"
    activities = ", ".join(runtime.registry.activity_names) or "-"
    print(
        f"jetloom dev: hosting {target}:{name} (prefix {runtime.subjects.prefix!r}; "
        f"workflows: {workflows}; activities: {activities})",
        flush=True,
    )
    if runtime.subjects.prefix != prefix:
        print(
            f"jetloom dev: note: {target}:{name} uses prefix {runtime.subjects.prefix!r}, "
            f"not {prefix!r}; run the other commands with --prefix {runtime.subjects.prefix}",
            flush=True,
        )


# ---------------------------------------------------------------------- parser


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (plus where to get help), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see '{self.prog} --help')\n")


def _status_option(text: str) -> WorkflowStatus:
    try:
        return WorkflowStatus(text.upper())
    except ValueError:
        names = ", ".join(s.value for s in WorkflowStatus)
        raise argparse.ArgumentTypeError(f"unknown status {text!r} (one of {names})") from None


def _count_option(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is less than {minimum}")
        return value

    return parse


def _seconds_option(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return value


def _add_auth_options(parser: argparse.ArgumentParser) -> None:
    """The nats CLI's credential and TLS options, each falling back to its variable."""
    group = parser.add_argument_group(
        "NATS credentials and TLS (as the nats CLI; secrets are never printed)"
    )
    helps = {
        "user": ("USER", "user name, with --password"),
        "password": ("PASSWORD", "password of --user"),
        "token": ("TOKEN", "authentication token"),
        "creds": ("FILE", "user credentials file (.creds: user JWT and nkey seed)"),
        "nkey": ("FILE", "file holding the user's nkey seed (SU...)"),
        "tls_cert": ("FILE", "TLS client certificate (PEM), with --tlskey"),
        "tls_key": ("FILE", "private key of --tlscert (PEM)"),
        "tls_ca": ("FILE", "CA certificates that signed the server's certificate (PEM)"),
    }
    for name, (metavar, text) in helps.items():
        fallback = ENVIRONMENT[name] + (", then the system's CAs" if name == "tls_ca" else "")
        group.add_argument(
            OPTIONS[name], dest=name, metavar=metavar, help=f"{text} (default: {fallback})"
        )


def _add_console_options(parser: argparse.ArgumentParser) -> None:
    """Options of the web console and of the API token that guards it and the Dapr API."""
    parser.add_argument(
        "--jaeger-url",
        default=DEFAULT_JAEGER_URL,
        help=f"Jaeger UI that the console's trace links open (default {DEFAULT_JAEGER_URL})",
    )
    parser.add_argument(
        "--api-token",
        default=os.environ.get("JETLOOM_API_TOKEN") or None,
        help="require this token (dapr-api-token header, bearer token or the console's login) "
        "on the HTTP API and the console (default: JETLOOM_API_TOKEN; none)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``jetloom`` argument parser with all subcommands."""
    common = _Parser(add_help=False)
    common.add_argument(
        "--nats-url",
        help=f"NATS server URL(s), comma separated (default: NATS_URL, then {DEFAULT_NATS_URL})",
    )
    common.add_argument(
        "--prefix",
        default=os.environ.get("JETLOOM_PREFIX") or DEFAULT_PREFIX,
        help="namespace of subjects, streams and buckets (default: JETLOOM_PREFIX, then jetloom)",
    )
    _add_auth_options(common)
    common.add_argument(
        "--no-color",
        action="store_true",
        help="plain text without colours or boxes (also when NO_COLOR is set or not a terminal)",
    )
    parser = _Parser(
        prog="jetloom",
        description="Durable workflows on NATS JetStream: host, start, inspect and steer them.",
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], help=help_text, description=help_text)

    def json_flag(p: argparse.ArgumentParser, text: str = "print JSON") -> None:
        p.add_argument("--json", action="store_true", help=text)

    p = command("dev", "host the WorkflowRuntimes of modules (embedded nats-server by default)")
    p.add_argument("modules", nargs="+", metavar="MODULE_OR_FILE", help="dotted name or .py file")
    p.add_argument(
        "--port",
        type=int,
        help=f"embedded server port (default {DEV_DEFAULT_PORT}; 0 picks a free one)",
    )
    p.add_argument("--store", help="embedded server's JetStream folder (default: a temporary one)")
    p.add_argument(
        "--http-port",
        type=_count_option(0),
        help=f"port of the console and Dapr's HTTP API on 127.0.0.1 (default {HTTP_DEFAULT_PORT}, "
        "or a free one if taken; 0 picks a free one)",
    )
    _add_console_options(p)
    p.set_defaults(handler=_cmd_dev, is_async=False)

    p = command("serve-http", "serve Dapr's workflow HTTP API (v1.0 and v1.0-beta1) over NATS")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument(
        "--port",
        type=_count_option(0),
        default=HTTP_DEFAULT_PORT,
        help=f"port to listen on (default {HTTP_DEFAULT_PORT}, Dapr's; 0 picks a free one)",
    )
    _add_console_options(p)
    p.set_defaults(handler=_cmd_serve_http, is_async=False)

    p = command("start", "start a workflow instance and print its id")
    p.add_argument("workflow", help="registered workflow name")
    p.add_argument(
        "--input",
        help="the input as JSON, e.g. '{\"qty\": 2}' or '\"text\"' (@file.json: from a file, "
        "@-: stdin)",
    )
    p.add_argument("--id", help="instance id (default: generated)")
    p.add_argument(
        "--wait",
        action="store_true",
        help="wait for the end; print status and output (exit 1 unless COMPLETED)",
    )
    p.add_argument("--timeout", type=float, default=60.0, help="seconds --wait waits (60)")
    json_flag(p, "print {instance_id} (with --wait: the final state) as JSON")
    p.set_defaults(handler=_cmd_start)

    p = command("status", "show an instance's status, input, output, custom status and failure")
    p.add_argument("instance_id", metavar="ID")
    json_flag(p)
    p.set_defaults(handler=_cmd_status)

    p = command("history", "show an instance's events with times, durations and task ids")
    p.add_argument("instance_id", metavar="ID")
    json_flag(p, "print the events as JSON (with delta_s and took_s)")
    p.set_defaults(handler=_cmd_history)

    p = command(
        "watch",
        "follow an instance until it finishes, or every running instance (Ctrl-C stops)",
    )
    p.add_argument("instance_id", metavar="ID", nargs="?", help="instance (default: all running)")
    p.add_argument("--once", action="store_true", help="show the current state and exit")
    p.add_argument("--timeout", type=_seconds_option, help="stop watching after this many seconds")
    json_flag(p, "print one JSON state per line per change")
    p.set_defaults(handler=_cmd_watch)

    p = command("raise", "raise an external event to an instance")
    p.add_argument("instance_id", metavar="ID")
    p.add_argument("event", metavar="EVENT", help="event name")
    p.add_argument("--data", help="event data as JSON (@file.json: from a file, @-: stdin)")
    json_flag(p)
    p.set_defaults(handler=_cmd_raise)

    p = command("terminate", "terminate an instance (and its child workflows)")
    p.add_argument("instance_id", metavar="ID")
    p.add_argument(
        "--output", help="the instance's output as JSON (@file.json: from a file, @-: stdin)"
    )
    p.add_argument(
        "--no-recursive",
        dest="recursive",
        action="store_false",
        help="leave child workflows running",
    )
    json_flag(p)
    p.set_defaults(handler=_cmd_terminate)

    p = command("pause", "suspend an instance (events are held until it resumes)")
    p.add_argument("instance_id", metavar="ID")
    json_flag(p)
    p.set_defaults(handler=_cmd_pause)

    p = command("resume", "resume a suspended instance")
    p.add_argument("instance_id", metavar="ID")
    json_flag(p)
    p.set_defaults(handler=_cmd_resume)

    p = command("purge", "delete a finished instance's history and state (and its children's)")
    p.add_argument("instance_id", metavar="ID")
    json_flag(p)
    p.set_defaults(handler=_cmd_purge)

    p = command("list", "list instances, oldest first")
    p.add_argument(
        "--status",
        type=_status_option,
        action="append",
        help="only this status, e.g. RUNNING (repeat for several)",
    )
    p.add_argument("--workflow", help="only instances of this workflow name")
    p.add_argument("--limit", type=_count_option(1), help="at most this many instances")
    paging = p.add_mutually_exclusive_group()
    paging.add_argument("--offset", type=_count_option(0), help="skip this many instances")
    paging.add_argument(
        "--page",
        type=_count_option(1),
        help=f"page number, 1-based, of --limit instances (default {LIST_DEFAULT_PAGE_SIZE})",
    )
    p.add_argument("--newest-first", action="store_true", help="newest instances first")
    json_flag(p)
    p.set_defaults(handler=_cmd_list)

    p = command("stats", "instance counts by status and the backlog of each work consumer")
    json_flag(p)
    p.set_defaults(handler=_cmd_stats)
    return parser


def _fail(message: str) -> int:
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
    return 1


def _quiet_tls_eof(record: logging.LogRecord) -> bool:
    """Drop asyncio's warning that nats-py's protocol asks to keep a TLS connection half open
    when the server closes it (harmless, and noise on the command's stderr)."""
    return "eof_received() has no effect when using ssl" not in record.getMessage()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jetloom`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.getLogger("asyncio").addFilter(_quiet_tls_eof)
    if args.handler not in (_cmd_dev, _cmd_serve_http):
        # A command's stdout is its answer: library log lines go to stderr, warnings and up.
        observability.configure_logging(level=os.environ.get("JETLOOM_LOG_LEVEL", "WARNING"))
    try:
        if getattr(args, "is_async", True):
            code = int(asyncio.run(args.handler(args)))
        else:
            code = int(args.handler(args))
        sys.stdout.flush()  # here, so that a reader that has gone is handled below
        return code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader of stdout went away (``| head``): stop quietly, as Unix tools do, and keep
        # Python's exit-time flush from reporting it again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except (
        CliError,
        InstanceNotFoundError,
        InstanceAlreadyRunningError,
        InvalidInstanceIdError,
    ) as exc:
        if os.environ.get("JETLOOM_DEBUG"):
            raise
        return _fail(str(exc))
    except Exception as exc:
        if os.environ.get("JETLOOM_DEBUG"):
            raise
        return _fail(
            f"{type(exc).__name__}: {exc} (set JETLOOM_DEBUG=1 for the traceback)"
            if str(exc)
            else f"{type(exc).__name__} (set JETLOOM_DEBUG=1 for the traceback)"
        )


if __name__ == "__main__":
    sys.exit(main())
