"""What every service shares: command-line flags, logging and the serve loop."""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NATS

import observability
from brokers import connect_nats, nats_url
from engine import WorkflowRuntime, stop_signal


def service_parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the flags every service takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--nats-url",
        default=nats_url(),
        help="NATS server URL(s), comma separated (default: $NATS_URL)",
    )
    parser.add_argument(
        "--prefix", default="jetloom", help="namespace of subjects, streams and buckets"
    )
    parser.add_argument(
        "--activity-lease",
        type=float,
        default=30.0,
        help="seconds a running activity stays with this worker if it stops heartbeating",
    )
    parser.add_argument("--log-level", default="info", help="debug, info, warning or error")
    return parser


def configure_logging(level: str) -> None:
    """Logs on stderr (stdout carries only the readiness line), traces and metrics over OTLP
    when OTEL_EXPORTER_OTLP_ENDPOINT is set; the service name is the module's name."""
    service = Path(sys.argv[0]).stem if sys.argv and sys.argv[0] else "service"
    observability.configure(service_name=f"order-{service}", log_level=level.upper())


def new_runtime(args: argparse.Namespace, **options: Any) -> WorkflowRuntime:
    """A runtime configured from the common flags (plus ``options``)."""
    return WorkflowRuntime(
        args.nats_url,
        prefix=args.prefix,
        activity_lease=timedelta(seconds=args.activity_lease),
        **options,
    )


async def connect(args: argparse.Namespace) -> NATS:
    """A nats-py connection that, like the runtime's, reconnects forever and takes credentials
    from the nats CLI's variables (NATS_CREDS, NATS_NKEY, NATS_USER, ...)."""
    return await connect_nats(args.nats_url)


async def serve(runtime: WorkflowRuntime, service: str) -> None:
    """Start the runtime, print ``ready <service>``, serve until SIGTERM/SIGINT, then stop."""
    with stop_signal() as stop:  # before "ready": no window without a handler
        await runtime.start()
        print(f"ready {service}", flush=True)
        await stop.wait()
        await runtime.shutdown()
    print(f"stopped {service}", flush=True)
