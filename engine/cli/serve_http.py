"""``jetloom serve-http``: Dapr's workflow HTTP API (engine/http/) over NATS, until stopped."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable

import observability
from brokers import JetStreamBroker, Subjects, connect_nats, redact_url
from engine import WorkflowClient, run_service, stop_signal
from engine.cli.connecting import auth_options, check_prefix, ensure_reachable, nats_url_of
from engine.cli.errors import CliError
from engine.http import build_app
from engine.http.console import add_console, serve_app

HTTP_DEFAULT_PORT = 3500
"""``jetloom serve-http`` listens where a Dapr sidecar's HTTP API does."""


async def serve_api_and_console(
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
    nc = await connect_nats(url, **auth_options(args))
    client = WorkflowClient(nc, prefix=args.prefix)
    try:
        broker = JetStreamBroker(nc, Subjects.of(args.prefix))
        await broker.ensure_topology()
        app = build_app(client, broker)
        add_console(app, client, broker, jaeger_url=args.jaeger_url, api_token=args.api_token)
        await serve_app(app, host=host, port=port, stop=stop, ready=ready)
    finally:
        await client.close()


async def _serve_http_until_stopped(args: argparse.Namespace, url: str) -> None:
    await ensure_reachable(url, auth_options(args))

    def ready(host: str, port: int) -> None:
        guarded = "; API token required" if args.api_token else ""
        print(
            f"jetloom serve-http: listening on http://{host}:{port} "
            f"(NATS at {redact_url(url)}, prefix {args.prefix!r}); console at "
            f"http://{host}:{port}/{guarded}; Ctrl-C stops",
            flush=True,
        )

    try:
        with stop_signal() as stop:
            await serve_api_and_console(
                args, url, host=args.host, port=args.port, stop=stop, ready=ready
            )
    except OSError as exc:
        raise CliError(
            f"cannot listen on {args.host}:{args.port} ({exc.strerror or exc}); "
            "choose another --port (0 picks a free one)"
        ) from None


def cmd_serve_http(args: argparse.Namespace) -> int:
    check_prefix(args)
    observability.configure(service_name="jetloom-http")
    run_service(_serve_http_until_stopped(args, nats_url_of(args)))
    print("jetloom serve-http: stopped", flush=True)
    return 0
