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


# ------------------------------------------------------------------------ NATS


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
    print(
        f"jetloom dev: NATS at {url} (embedded nats-server, store {server.store_dir})",
        flush=True,
    )


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
        hosted = _find_runtimes(args.modules, url, nats_auth(args))
        _start_nats(args, url, server)
        for (target, name), runtime in hosted.items():
            _describe_runtime(target, name, runtime, args.prefix)
        ready = _ready_line(args, url)
        run_service(_serve(
            list(hosted.values()), lambda: print(ready, flush=True), _console_server(args, url)
        ))
        print("jetloom dev: stopped", flush=True)
        return 0
    finally:
        if server is not None:
            server.cleanup()
