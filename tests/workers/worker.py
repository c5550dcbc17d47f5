"""A jetloom worker run as a separate process by the integration tests.

It hosts activities (``--activities``), workflows (``--workflows``) or both, prints ``ready``
on stdout once ``runtime.start()`` has returned, and serves until SIGTERM. stdout carries only
the lines the tests wait for (``ready``, ``started <task_execution_id>``); logs go to stderr.

Usage::

    python tests/workers/worker.py --nats-url URL --prefix P --worker-name wA --activities \\
        --record work.log [--lease 2] [--max-activities 4] [--hang]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from datetime import timedelta
from pathlib import Path

import structlog

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine import ActivityContext, WorkflowContext, WorkflowRuntime  # noqa: E402
from tests.processes import append_line, parse_worker_arguments, worker_arguments  # noqa: E402


def _parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = worker_arguments(__doc__.splitlines()[0])
    parser.add_argument(
        "--hang", action="store_true", help="hang_once blocks until the process is killed"
    )
    return parse_worker_arguments(parser, argv)


def build_runtime(args: argparse.Namespace) -> WorkflowRuntime:
    """A runtime hosting what the arguments ask for."""
    runtime = WorkflowRuntime(
        args.nats_url,
        prefix=args.prefix,
        activity_lease=timedelta(seconds=args.lease),
        max_concurrent_activities=args.max_activities,
    )
    worker = args.worker_name

    if args.activities:
        record: Path = args.record

        @runtime.activity(name="record_work")
        async def record_work(ctx: ActivityContext, x: int) -> int:
            """Take ~50 ms, note who ran which task, return twice the input."""
            await asyncio.sleep(0.05)
            append_line(record, f"{worker} {ctx.task_execution_id}")
            return 2 * x

        @runtime.activity(name="hang_once")
        async def hang_once(ctx: ActivityContext, x: int) -> str:
            """Note the attempt, say ``started``, then hang (with --hang) or finish."""
            append_line(record, f"{worker} {ctx.task_execution_id}")
            print(f"started {ctx.task_execution_id}", flush=True)
            if args.hang:
                await asyncio.Event().wait()
            return f"done by {worker}"

    if args.workflows:

        @runtime.workflow(name="sleepy")
        async def sleepy(ctx: WorkflowContext, seconds: float) -> str:
            """Sleep on a durable timer, then finish."""
            await ctx.create_timer(timedelta(seconds=seconds))
            return "woke"

    return runtime


async def main(argv: list[str] | None = None) -> None:
    """Start the runtime, say ``ready``, serve until SIGTERM."""
    args = _parse_args(argv)
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
    )
    runtime = build_runtime(args)
    await runtime.start()
    print("ready", flush=True)
    await runtime.run()


if __name__ == "__main__":
    asyncio.run(main())
