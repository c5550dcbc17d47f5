"""``jetloom dev``: host every ``WorkflowRuntime`` found in modules, on an embedded nats-server
unless a NATS URL is given, until stopped."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import os
import socket
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import observability
from brokers import (
    DEFAULT_NATS_URL,
    DEFAULT_PREFIX,
    EmbeddedNatsServer,
    InvalidNatsAuthError,
    NatsAuth,
    free_port,
    redact_url,
    with_default_auth,
)
from engine import WorkflowRuntime, run_service, stop_signal
from engine.cli.connecting import auth_options, ensure_reachable, nats_auth
from engine.cli.errors import CliError
from engine.cli.serve_http import HTTP_DEFAULT_PORT, serve_api_and_console

DEV_DEFAULT_PORT = 4222
"""``jetloom dev`` serves on NATS's usual port, so the other commands reach it by default."""
DEV_DEFAULT_STORE = ".jetloom"
"""Where ``jetloom dev`` keeps the embedded server's state: in the project, so a restart finds
every instance and timer again."""


# ------------------------------------------------------------------ the modules


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


def _check_targets(targets: Sequence[str]) -> None:
    """Fail on a module that cannot be there, before anything else is looked at (a port, a
    server): a missing ``.py`` file, or a dotted name whose top-level package is nowhere."""
    for target in targets:
        if target.endswith(".py") or os.sep in target:
            if not Path(target).is_file():
                raise CliError(
                    f"no such file {target!r}; give a .py file or a dotted module name"
                )
        elif importlib.util.find_spec(target.partition(".")[0]) is None:
            raise CliError(
                f"cannot import {target!r}: no module named {target.partition('.')[0]!r}; "
                "run from the project folder or give a file path"
            )


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


LARGEST_WINS = (
    "max_concurrent_workflow_tasks",
    "max_concurrent_activities",
    "history_cache_size",
    "activity_lease",
    "workflow_task_lease",
)
"""Settings the one runtime of several modules takes the largest of. They size one process
(or how long a crashed one keeps its work), never a bound other code may rely on: many
processes may host the same workflows, so a limit of one never serialises anything."""
MUST_AGREE = (
    "app_id",
    "replay_rules",
    "retention",
    "stall_retry_max",
    "large_payload_threshold",
    "dispatch_ttl",
    "replicas",
)
"""Settings modules hosted in one runtime must set alike: no one value serves modules that
ask for different ones."""


def _shown(runtime: WorkflowRuntime, setting: str) -> str:
    """A runtime's setting in an error line (strings quoted, so that '' shows)."""
    value = getattr(runtime, setting)
    return repr(value) if isinstance(value, str) else str(value)


def _merge_settings(members: list[tuple[str, WorkflowRuntime]]) -> list[str]:
    """Give the first of ``members`` (the runtime that hosts them all) the largest of each
    ``LARGEST_WINS`` setting; a note for each on which they differ.

    Raises:
        CliError: they set a ``MUST_AGREE`` setting differently.
    """
    host = members[0][1]
    disagreements = [
        f"{setting} ({', '.join(f'{label}: {_shown(r, setting)}' for label, r in members)})"
        for setting in MUST_AGREE
        if any(getattr(r, setting) != getattr(host, setting) for _, r in members[1:])
    ]
    if disagreements:
        labels = " and ".join(label for label, _ in members)
        raise CliError(
            f"cannot host {labels} in one runtime: they set {'; '.join(disagreements)} "
            "differently; set them alike in every module, or host the modules in separate "
            "processes"
        )
    notes = []
    for setting in LARGEST_WINS:
        label, largest = max(members, key=lambda m: getattr(m[1], setting))
        value = getattr(largest, setting)
        if any(getattr(r, setting) != value for _, r in members):
            notes.append(f"{setting}={value} (the largest, from {label})")
        setattr(host, setting, value)
    return notes


def _one_runtime_each(
    hosted: dict[tuple[str, str], WorkflowRuntime],
) -> list[tuple[list[str], WorkflowRuntime, list[str]]]:
    """One runtime per namespace (prefix and server) hosting everything the modules' runtimes
    register there, each named by the runtimes it stands for (``a.py:wfr and b.py:wfr``), with
    notes on the settings it took from them.

    Runtimes of one namespace would compete for the same work, each taking starts and
    activities it does not host; so the first hosts all of them: the task queues of all, the
    largest of each capacity setting (``LARGEST_WINS``), and the other settings, which must
    agree (``MUST_AGREE``). A name two of them register for different functions is refused.
    """
    groups: dict[tuple[str, str | None], list[tuple[str, WorkflowRuntime]]] = {}
    for (target, name), runtime in hosted.items():
        key = (runtime.subjects.prefix, runtime.nats_url)
        groups.setdefault(key, []).append((f"{target}:{name}", runtime))
    clashes = [
        f"{label} and {other_label} both register {', '.join(found)}"
        for members in groups.values()
        for i, (other_label, other) in enumerate(members)
        for label, runtime in members[:i]
        if (found := runtime.registry.clashes(other.registry))
    ]
    if clashes:
        raise CliError(
            f"cannot host these modules in one runtime: {'; '.join(clashes)}; a name is hosted "
            "once, so rename one (name=...) or leave a module out"
        )
    hosts = []
    for members in groups.values():
        host = members[0][1]
        notes = _merge_settings(members)
        for _, other in members[1:]:
            host.registry.include(other.registry)
            host.task_queues += [q for q in other.task_queues if q not in host.task_queues]
        hosts.append(([label for label, _ in members], host, notes))
    return hosts


def _describe_runtime(
    labels: list[str], runtime: WorkflowRuntime, prefix: str, notes: list[str]
) -> None:
    workflows = ", ".join(runtime.registry.workflow_names) or "-"
    activities = ", ".join(runtime.registry.activity_names) or "-"
    label = " and ".join([", ".join(labels[:-1]), labels[-1]]) if labels[1:] else labels[0]
    shared = " in one runtime" if labels[1:] else ""
    print(
        f"jetloom dev: hosting {label}{shared} (prefix {runtime.subjects.prefix!r}; "
        f"workflows: {workflows}; activities: {activities})",
        flush=True,
    )
    if runtime.subjects.prefix != prefix:
        print(
            f"jetloom dev: note: {label} uses prefix {runtime.subjects.prefix!r}, "
            f"not {prefix!r}; run the other commands with --prefix {runtime.subjects.prefix}",
            flush=True,
        )
    if notes:
        print(f"jetloom dev: note: the modules' runtime takes {', '.join(notes)}", flush=True)


# ------------------------------------------------------------------------ NATS


def _port_in_use(port: int) -> bool:
    """True if something listens on ``port`` (connections of a server that just stopped, in
    TIME_WAIT, do not count: a new server may listen there, as nats-server does)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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
    store = None if args.temporary else Path(args.store or DEV_DEFAULT_STORE).resolve()
    return EmbeddedNatsServer(store_dir=store, port=port)


def _start_nats(args: argparse.Namespace, url: str, server: EmbeddedNatsServer | None) -> None:
    """Start the embedded server, or check that the given one answers."""
    if server is None:
        asyncio.run(ensure_reachable(url, auth_options(args)))
        print(f"jetloom dev: NATS at {redact_url(url)}", flush=True)
        return
    try:
        server.start()
    except (RuntimeError, FileNotFoundError) as exc:
        raise CliError(f"cannot start the embedded nats-server: {exc}") from None
    where = (
        f"temporary store {server.store_dir}, removed on exit"
        if args.temporary
        else f"state kept in {server.store_dir}; --temporary for a throwaway store"
    )
    print(f"jetloom dev: NATS at {url} (embedded nats-server, {where})", flush=True)


# ------------------------------------------------------------------- hosting


ServeConsole = Callable[[asyncio.Event, Callable[[str, int], None]], Coroutine[Any, Any, None]]
"""Serves the console until the event is set, calling back with (host, port) once listening."""


async def _serve(
    runtimes: list[WorkflowRuntime], ready: Callable[[], None], serve_console: ServeConsole
) -> None:
    """Run all runtimes and the console until SIGINT/SIGTERM, then shut them down gracefully.

    ``WorkflowRuntime.run`` would install one signal handler per runtime, and a later one
    replaces an earlier one, so several runtimes share one stop event here instead.
    """
    loop = asyncio.get_running_loop()
    console: asyncio.Task[None] | None = None
    with stop_signal() as stop:
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


def _console_server(args: argparse.Namespace, url: str) -> ServeConsole:
    """The console and Dapr's HTTP API on 127.0.0.1, at ``--http-port`` (default: the usual
    port, or a free one if something else has it)."""
    http_port = args.http_port
    if http_port is None:
        http_port = 0 if _port_in_use(HTTP_DEFAULT_PORT) else HTTP_DEFAULT_PORT

    async def serve_console(stop: asyncio.Event, listening: Callable[[str, int], None]) -> None:
        try:
            await serve_api_and_console(
                args, url, host="127.0.0.1", port=http_port, stop=stop, ready=listening
            )
        except OSError as exc:
            raise CliError(
                f"cannot serve the console on 127.0.0.1:{http_port} ({exc.strerror or exc});"
                " choose another --http-port (0 picks a free one)"
            ) from None

    return serve_console


def _ready_line(args: argparse.Namespace, url: str) -> str:
    """What to run in another shell to reach the hosted runtimes."""
    hint = "" if url == DEFAULT_NATS_URL else f" --nats-url {redact_url(url)}"
    if args.prefix != DEFAULT_PREFIX:
        hint += f" --prefix {args.prefix}"
    return f"jetloom dev: ready; Ctrl-C stops. In another shell: jetloom list{hint}"


def cmd_dev(args: argparse.Namespace) -> int:
    external_url = args.nats_url or os.environ.get("NATS_URL")
    if external_url and (args.port is not None or args.store is not None or args.temporary):
        raise CliError(
            "--port, --store and --temporary configure the embedded nats-server, but "
            f"NATS_URL/--nats-url ({redact_url(str(external_url))}) says to use an existing "
            "one; drop one or the other"
        )
    if args.store is not None and args.temporary:
        raise CliError("--store keeps the state in a folder, --temporary throws it away; "
                       "give one of them")
    _check_targets(args.modules)
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
        hosts = _one_runtime_each(_find_runtimes(args.modules, url, nats_auth(args)))
        _start_nats(args, url, server)
        for labels, runtime, notes in hosts:
            _describe_runtime(labels, runtime, args.prefix, notes)
        ready = _ready_line(args, url)
        run_service(_serve(
            [runtime for _, runtime, _ in hosts], lambda: print(ready, flush=True),
            _console_server(args, url),
        ))
        print("jetloom dev: stopped", flush=True)
        return 0
    finally:
        if server is not None:
            server.cleanup()
