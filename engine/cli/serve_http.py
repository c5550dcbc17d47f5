"""``jetloom serve-http``: Dapr's workflow HTTP API (engine/http/) over NATS, until stopped."""

from __future__ import annotations

import argparse

import observability
from brokers import redact_url
from engine import WorkflowClient, run_service, stop_signal
from engine.cli.connecting import auth_options, check_prefix, ensure_reachable, nats_url_of
from engine.cli.errors import CliError
from engine.http import serve_http

HTTP_DEFAULT_PORT = 3500
"""``jetloom serve-http`` listens where a Dapr sidecar's HTTP API does."""


async def _serve_http_until_stopped(args: argparse.Namespace, url: str) -> None:
    options = auth_options(args)
    await ensure_reachable(url, options)
    # A long-running server reconnects forever, like a runtime (not the CLI's fail-fast).
    client = await WorkflowClient.connect(url, prefix=args.prefix, **options)

    def ready(host: str, port: int) -> None:
        print(
            f"jetloom serve-http: listening on http://{host}:{port} "
            f"(NATS at {redact_url(url)}, prefix {args.prefix!r}); Ctrl-C stops",
            flush=True,
        )

    try:
        with stop_signal() as stop:
            await serve_http(client, host=args.host, port=args.port, stop=stop, ready=ready)
    except OSError as exc:
        raise CliError(
            f"cannot listen on {args.host}:{args.port} ({exc.strerror or exc}); "
            "choose another --port (0 picks a free one)"
        ) from None
    finally:
        await client.close()


def cmd_serve_http(args: argparse.Namespace) -> int:
    check_prefix(args)
    observability.configure(service_name="jetloom-http")
    run_service(_serve_http_until_stopped(args, nats_url_of(args)))
    print("jetloom serve-http: stopped", flush=True)
    return 0
