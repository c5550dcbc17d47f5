"""The ``jetloom`` command line: host workflows in development and inspect or steer instances.

``jetloom dev app.py`` hosts every ``WorkflowRuntime`` found in a module (with an embedded
nats-server unless a NATS URL is given); ``start``, ``status``, ``history``, ``raise``,
``terminate``, ``pause``, ``resume``, ``purge`` and ``list`` talk to instances through a
``WorkflowClient``. Every failure is one ``error: ...`` line on stderr and exit code 1
(usage mistakes exit 2, as with any argparse program); ``JETLOOM_DEBUG=1`` shows tracebacks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import importlib.util
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import msgspec
import nats.errors
import nats.js.errors

import observability
from brokers import Subjects, connect_nats
from brokers._server import EmbeddedNatsServer, free_port
from engine._client import WorkflowClient
from engine._errors import (
    InstanceAlreadyRunningError,
    InstanceNotFoundError,
    InvalidInstanceIdError,
)
from engine._events import FailureDetails, HistoryEvent
from engine._runtime import WorkflowRuntime
from engine._state import WorkflowState, WorkflowStatus

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
DEFAULT_PREFIX = "jetloom"
DEV_DEFAULT_PORT = 4222
"""``jetloom dev`` serves on NATS's usual port, so the other commands reach it by default."""

_DETAIL_WIDTH = 60
"""Payloads longer than this are shortened in tables."""

_HISTORY_SKIPPED_FIELDS = frozenset(
    {"timestamp", "execution_id", "task_execution_id", "traceparent", "tracestate"}
)
"""Event fields too noisy for the history table (``--json`` shows everything)."""


class CliError(Exception):
    """A failure to report as one ``error: ...`` line on stderr (exit code 1)."""


# ------------------------------------------------------------------ connecting


def _nats_url(args: argparse.Namespace) -> str:
    return str(args.nats_url or os.environ.get("NATS_URL") or DEFAULT_NATS_URL)


async def _ignore_nats_error(exc: Exception) -> None:
    """Connection trouble is reported once, as the command's error, not per attempt."""


async def _ignore_nats_event() -> None:
    """A command's own close is not worth a 'disconnected' log line on its output."""


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
        f"cannot connect to NATS at {url}; start a server there (nats-server -js), "
        "run 'jetloom dev' (it embeds one), or point --nats-url / NATS_URL at yours"
    )


async def _check_reachable(url: str) -> None:
    """Connect once with the CLI's fail-fast options, so a wrong URL is one clear error."""
    try:
        nc = await connect_nats(url, **_cli_connect_options())
    except (nats.errors.Error, OSError, TimeoutError):
        raise _unreachable(url) from None
    await nc.close()


@contextlib.asynccontextmanager
async def _connected(args: argparse.Namespace) -> AsyncIterator[WorkflowClient]:
    """A client on ``--nats-url`` / ``--prefix`` that fails fast when no server answers."""
    url = _nats_url(args)
    try:
        Subjects(args.prefix)
    except ValueError as exc:
        raise CliError(f"--prefix: {exc}") from None
    try:
        nc = await connect_nats(url, **_cli_connect_options())
    except (nats.errors.Error, OSError, TimeoutError):
        raise _unreachable(url) from None
    client = WorkflowClient(nc, prefix=args.prefix)
    try:
        yield client
    except (nats.errors.NoRespondersError, nats.js.errors.ServiceUnavailableError):
        raise CliError(
            f"the NATS server at {url} has no JetStream; start nats-server with -js "
            "(or use 'jetloom dev')"
        ) from None
    except (nats.errors.ConnectionClosedError, nats.errors.UnexpectedEOF):
        raise CliError(f"lost the connection to NATS at {url}; is the server still up?") from None
    except nats.errors.TimeoutError:
        raise CliError(f"NATS at {url} did not answer in time; is JetStream healthy?") from None
    finally:
        with contextlib.suppress(Exception):
            await client.close()


# ------------------------------------------------------------------ formatting


def _parse_json_option(option: str, text: str | None) -> Any:
    """The value of a JSON-valued option, or a CliError naming the option."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(
            f"{option} is not valid JSON ({exc}); quote strings as JSON, "
            f"e.g. {option} '\"text\"' or {option} '{{\"qty\": 2}}'"
        ) from None


def _time(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def _short(text: str, width: int = _DETAIL_WIDTH) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _failure_text(failure: FailureDetails) -> str:
    return f"{failure.type}: {failure.message}" if failure.message else failure.type


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table: left-aligned columns, a dashed rule under the header."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


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


def _state_lines(state: WorkflowState) -> list[str]:
    fields = [
        ("instance", state.instance_id),
        ("workflow", state.name),
        ("status", state.runtime_status.value),
        ("created", _time(state.created_at)),
        ("updated", _time(state.last_updated_at)),
    ]
    for label, payload in (
        ("input", state.serialized_input),
        ("output", state.serialized_output),
        ("custom status", state.serialized_custom_status),
    ):
        if payload is not None:
            fields.append((label, payload))
    if state.failure_details is not None:
        fields.append(("failure", _failure_text(state.failure_details)))
    width = max(len(label) for label, _ in fields) + 1
    return [f"{(label + ':').ljust(width)} {value}" for label, value in fields]


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


# -------------------------------------------------------------------- commands


async def _cmd_start(args: argparse.Namespace) -> int:
    workflow_input = _parse_json_option("--input", args.input)
    async with _connected(args) as client:
        instance_id = await client.schedule_new_workflow(
            args.workflow, input=workflow_input, instance_id=args.id
        )
        print(instance_id, flush=True)
        if not args.wait:
            return 0
        try:
            state = await client.wait_for_workflow_completion(instance_id, timeout=args.timeout)
        except TimeoutError:
            raise CliError(
                f"instance {instance_id!r} did not finish within {args.timeout:g}s; it keeps "
                f"running (jetloom status {instance_id}); is a worker hosting "
                f"{args.workflow!r} on prefix {args.prefix!r}?"
            ) from None
    print(f"status: {state.runtime_status.value}")
    if state.serialized_output is not None:
        print(f"output: {state.serialized_output}")
    if state.failure_details is not None:
        print(f"failure: {_failure_text(state.failure_details)}")
    return 0 if state.runtime_status is WorkflowStatus.COMPLETED else 1


async def _existing_state(client: WorkflowClient, instance_id: str) -> WorkflowState:
    state = await client.get_workflow_state(instance_id)
    if state is None:
        raise InstanceNotFoundError(
            f"no instance {instance_id!r}; check the id (jetloom list shows instances)"
        )
    return state


async def _cmd_status(args: argparse.Namespace) -> int:
    async with _connected(args) as client:
        state = await _existing_state(client, args.instance_id)
    if args.json:
        print(json.dumps(_state_as_json(state), indent=2))
    else:
        print("\n".join(_state_lines(state)))
    return 0


async def _cmd_history(args: argparse.Namespace) -> int:
    async with _connected(args) as client:
        await _existing_state(client, args.instance_id)
        events = await client.get_history(args.instance_id)
    if args.json:
        print(msgspec.json.format(msgspec.json.encode(events), indent=2).decode())
        return 0
    rows = [
        [str(i), _time(ev.timestamp), _event_type(ev), _event_details(ev)]
        for i, ev in enumerate(events)
    ]
    print(_table(["#", "time", "type", "details"], rows))
    return 0


async def _steer(
    args: argparse.Namespace,
    verb: str,
    action: Callable[[WorkflowClient], Awaitable[object]],
) -> int:
    """Run a steering action on an instance that exists and has not finished."""
    async with _connected(args) as client:
        state = await _existing_state(client, args.instance_id)
        if state.runtime_status.is_terminal:
            raise CliError(
                f"instance {args.instance_id!r} is already {state.runtime_status.value}; "
                f"there is nothing to {verb}"
            )
        await action(client)
    return 0


async def _cmd_raise(args: argparse.Namespace) -> int:
    data = _parse_json_option("--data", args.data)
    await _steer(
        args,
        "raise an event to",
        lambda c: c.raise_workflow_event(args.instance_id, args.event, data=data),
    )
    print(f"raised event {args.event!r} to {args.instance_id}")
    return 0


async def _cmd_terminate(args: argparse.Namespace) -> int:
    output = _parse_json_option("--output", args.output)
    await _steer(
        args,
        "terminate",
        lambda c: c.terminate_workflow(args.instance_id, output=output, recursive=args.recursive),
    )
    print(f"terminating {args.instance_id}")
    return 0


async def _cmd_pause(args: argparse.Namespace) -> int:
    await _steer(args, "pause", lambda c: c.pause_workflow(args.instance_id))
    print(f"pausing {args.instance_id}")
    return 0


async def _cmd_resume(args: argparse.Namespace) -> int:
    await _steer(args, "resume", lambda c: c.resume_workflow(args.instance_id))
    print(f"resuming {args.instance_id}")
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
    print(f"purged {args.instance_id} ({purged} instance{'s' if purged != 1 else ''})")
    return 0


async def _cmd_list(args: argparse.Namespace) -> int:
    async with _connected(args) as client:
        states = [
            s async for s in client.list_workflows(status=args.status, workflow_name=args.workflow)
        ]
    states.sort(key=lambda s: (s.created_at, s.instance_id))
    if args.json:
        print(json.dumps([_state_as_json(s) for s in states], indent=2))
    elif not states:
        print("no instances")
    else:
        rows = [
            [
                s.instance_id,
                s.name,
                s.runtime_status.value,
                _time(s.created_at),
                _time(s.last_updated_at),
            ]
            for s in states
        ]
        print(_table(["instance", "workflow", "status", "created", "updated"], rows))
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


async def _serve(runtimes: list[WorkflowRuntime], ready: Callable[[], None]) -> None:
    """Run all runtimes until SIGINT/SIGTERM, then shut them down gracefully.

    ``WorkflowRuntime.run`` would install one signal handler per runtime, and a later one
    replaces an earlier one, so several runtimes share one stop event here instead.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        started: list[WorkflowRuntime] = []
        try:
            for runtime in runtimes:
                await runtime.start()
                started.append(runtime)
            ready()
            await stop.wait()
        finally:
            await asyncio.gather(*(rt.shutdown() for rt in started), return_exceptions=True)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def _cmd_dev(args: argparse.Namespace) -> int:
    external_url = args.nats_url or os.environ.get("NATS_URL")
    if external_url and (args.port is not None or args.store is not None):
        raise CliError(
            f"--port and --store configure the embedded nats-server, but NATS_URL/--nats-url "
            f"({external_url}) says to use an existing one; drop one or the other"
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
        hosted = _find_runtimes(args.modules, url)
        if server is None:
            asyncio.run(_check_reachable(url))
            print(f"jetloom dev: NATS at {url}", flush=True)
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
            hint = "" if url == DEFAULT_NATS_URL else f" --nats-url {url}"
            if args.prefix != DEFAULT_PREFIX:
                hint += f" --prefix {args.prefix}"
            print(
                f"jetloom dev: ready; Ctrl-C stops. In another shell: jetloom list{hint}",
                flush=True,
            )

        asyncio.run(_serve(list(hosted.values()), ready))
        print("jetloom dev: stopped", flush=True)
        return 0
    finally:
        if server is not None:
            server.cleanup()


def _find_runtimes(targets: Sequence[str], url: str) -> dict[tuple[str, str], WorkflowRuntime]:
    """Import ``targets`` and collect their module-level runtimes, keyed by (target, name).

    A runtime without a URL of its own gets ``url``.
    """
    hosted: dict[tuple[str, str], WorkflowRuntime] = {}
    for target in targets:
        for name, runtime in _runtimes_in(_load_module(target)):
            if any(runtime is h for h in hosted.values()):
                continue
            if runtime.nats_url is None:
                runtime.nats_url = url
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
    parser = _Parser(
        prog="jetloom",
        description="Durable workflows on NATS JetStream: host, start, inspect and steer them.",
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], help=help_text, description=help_text)

    p = command("dev", "host the WorkflowRuntimes of modules (embedded nats-server by default)")
    p.add_argument("modules", nargs="+", metavar="MODULE_OR_FILE", help="dotted name or .py file")
    p.add_argument(
        "--port",
        type=int,
        help=f"embedded server port (default {DEV_DEFAULT_PORT}; 0 picks a free one)",
    )
    p.add_argument("--store", help="embedded server's JetStream folder (default: a temporary one)")
    p.set_defaults(handler=_cmd_dev, is_async=False)

    p = command("start", "start a workflow instance and print its id")
    p.add_argument("workflow", help="registered workflow name")
    p.add_argument("--input", help="the input as JSON, e.g. '{\"qty\": 2}' or '\"text\"'")
    p.add_argument("--id", help="instance id (default: generated)")
    p.add_argument(
        "--wait",
        action="store_true",
        help="wait for the end; print status and output (exit 1 unless COMPLETED)",
    )
    p.add_argument("--timeout", type=float, default=60.0, help="seconds --wait waits (60)")
    p.set_defaults(handler=_cmd_start)

    p = command("status", "show an instance's status, input, output and failure")
    p.add_argument("instance_id", metavar="ID")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=_cmd_status)

    p = command("history", "show an instance's event history")
    p.add_argument("instance_id", metavar="ID")
    p.add_argument("--json", action="store_true", help="print the events as JSON")
    p.set_defaults(handler=_cmd_history)

    p = command("raise", "raise an external event to an instance")
    p.add_argument("instance_id", metavar="ID")
    p.add_argument("event", metavar="EVENT", help="event name")
    p.add_argument("--data", help="event data as JSON")
    p.set_defaults(handler=_cmd_raise)

    p = command("terminate", "terminate an instance (and its child workflows)")
    p.add_argument("instance_id", metavar="ID")
    p.add_argument("--output", help="the instance's output as JSON")
    p.add_argument(
        "--no-recursive",
        dest="recursive",
        action="store_false",
        help="leave child workflows running",
    )
    p.set_defaults(handler=_cmd_terminate)

    p = command("pause", "suspend an instance (events are held until it resumes)")
    p.add_argument("instance_id", metavar="ID")
    p.set_defaults(handler=_cmd_pause)

    p = command("resume", "resume a suspended instance")
    p.add_argument("instance_id", metavar="ID")
    p.set_defaults(handler=_cmd_resume)

    p = command("purge", "delete a finished instance's history and state (and its children's)")
    p.add_argument("instance_id", metavar="ID")
    p.set_defaults(handler=_cmd_purge)

    p = command("list", "list instances")
    p.add_argument("--status", type=_status_option, help="only this status, e.g. RUNNING")
    p.add_argument("--workflow", help="only instances of this workflow name")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=_cmd_list)
    return parser


def _fail(message: str) -> int:
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jetloom`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "is_async", True):
            return int(asyncio.run(args.handler(args)))
        return int(args.handler(args))
    except KeyboardInterrupt:
        return 130
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
