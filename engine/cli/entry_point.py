"""``main``: parse the command line, run the command, and turn every failure into one
``error: ...`` line and an exit code."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence

import observability
from engine import (
    InstanceAlreadyRunningError,
    InstanceNotFoundError,
    InvalidInstanceIdError,
    ScheduleAlreadyExistsError,
    ScheduleNotFoundError,
)
from engine.cli.errors import CliError
from engine.cli.parser import build_parser


def _fail(message: str) -> int:
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
    return 1


def _quiet_tls_eof(record: logging.LogRecord) -> bool:
    """Drop asyncio's warning that nats-py's protocol asks to keep a TLS connection half open
    when the server closes it (harmless, and noise on the command's stderr)."""
    return "eof_received() has no effect when using ssl" not in record.getMessage()


def _run(args: argparse.Namespace) -> int:
    """The command's exit code; a service runs its own event loop (and logging)."""
    if getattr(args, "is_service", False):
        return int(args.handler(args))
    # A command's stdout is its answer: library log lines go to stderr, warnings and up.
    observability.configure_logging(level=os.environ.get("JETLOOM_LOG_LEVEL", "WARNING"))
    return int(asyncio.run(args.handler(args)))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jetloom`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.getLogger("asyncio").addFilter(_quiet_tls_eof)
    try:
        code = _run(args)
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
        ScheduleAlreadyExistsError,
        ScheduleNotFoundError,
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
