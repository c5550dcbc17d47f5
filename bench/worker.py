"""A benchmark worker process: ``python bench/worker.py URL PREFIX ROLE MODE``.

ROLE is ``orchestrator``, ``activities`` or ``both``. MODE is how the process is set up:

- ``default``: as a user's service gets it: ``observability.configure(...)`` (structlog at
  INFO, JSON lines on stderr when it is not a terminal), ``WorkflowRuntime(url, prefix=...)``
  with no tuning argument, and the event loop of ``asyncio.run``.
- ``tuned``: 1,000 workflow tasks and 1,000 activities at once, WARNING logs and uvloop.

The process prints ``ready`` on stdout once the runtime has started; logs go to stderr only,
so stdout carries nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import observability
from bench.workloads import build_runtime
from engine import run_service

MODES = ("default", "tuned")
TUNED_MAX_TASKS = 1000


async def serve(url: str, prefix: str, role: str, max_tasks: int | None) -> None:
    """Host the role's workflows and/or activities until SIGTERM."""
    runtime = build_runtime(
        url, prefix, workflows=role in ("orchestrator", "both"),
        activities=role in ("activities", "both"), max_tasks=max_tasks,
    )
    await runtime.start()
    print("ready", flush=True)
    await runtime.run()


def main(url: str, prefix: str, role: str, mode: str) -> None:
    """Set the process up as ``mode`` says, then serve."""
    if mode == "default":
        observability.configure(service_name=f"bench-{role}")
        asyncio.run(serve(url, prefix, role, max_tasks=None))
    elif mode == "tuned":
        structlog.configure(
            wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
            logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        )
        run_service(serve(url, prefix, role, max_tasks=TUNED_MAX_TASKS))
    else:
        raise SystemExit(f"unknown mode {mode!r} (one of: {', '.join(MODES)})")


if __name__ == "__main__":
    main(*sys.argv[1:5])
