"""What every service shares: command-line flags, logging and the serve loop."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from datetime import timedelta
from typing import Any

import nats
import structlog
from nats.aio.client import Client as NATS

from engine import WorkflowRuntime


def service_parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the flags every service takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--nats-url",
        default=os.environ.get("NATS_URL", "nats://127.0.0.1:4222"),
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
    """structlog key-value logs on stderr; stdout carries only the readiness line."""
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
    )


def new_runtime(args: argparse.Namespace, **options: Any) -> WorkflowRuntime:
    """A runtime configured from the common flags (plus ``options``)."""
    return WorkflowRuntime(
        args.nats_url,
        prefix=args.prefix,
        activity_lease=timedelta(seconds=args.activity_lease),
        **options,
    )


async def connect(args: argparse.Namespace) -> NATS:
    """A plain nats-py connection that, like the runtime's, reconnects forever."""
    return await nats.connect(
        servers=args.nats_url.split(","), max_reconnect_attempts=-1, reconnect_time_wait=0.5
    )


async def serve(runtime: WorkflowRuntime, service: str) -> None:
    """Start the runtime, print ``ready <service>``, serve until SIGTERM/SIGINT, then stop."""
    await runtime.start()
    print(f"ready {service}", flush=True)
    await runtime.run()
    print(f"stopped {service}", flush=True)
