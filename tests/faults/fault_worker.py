"""A jetloom worker process for the fault tests: crash points, races, poison tasks, auth.

It hosts the fault workflows (``--workflows``) and/or the ``count`` activity (``--activities``),
prints ``ready`` on stdout once ``runtime.start()`` has returned and serves until SIGTERM. Logs
(structlog key-value lines) go to stderr, which the tests keep in a file and read. Set
``JETLOOM_CRASH_AT`` in its environment to make it SIGKILL itself at a crash point.

The ``count`` activity is the effect counter: each run appends one line
``<worker> <instance id> <task_execution_id>`` to ``--record`` (one O_APPEND write), so the test
sees every time an effect was applied, including the runs a crash made the engine repeat.

Usage::

    python tests/faults/fault_worker.py --nats-url URL[,URL...] --prefix P --worker-name w1 \\
        --workflows --activities --record effects.log [--lease 2] [--replicas 3] \\
        [--user U --password PW | --token T] [--with-ghost] [--log-level debug]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
import structlog

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine import (  # noqa: E402
    ActivityContext,
    WorkflowContext,
    WorkflowRuntime,
    when_all,
)
from tests.processes import append_line, parse_worker_arguments, worker_arguments  # noqa: E402


class SagaInput(msgspec.Struct):
    """Input of the ``saga`` workflow."""

    base: int
    fan: int = 2
    timer_s: float = 0.0


class Order(msgspec.Struct):
    """Input of the ``typed`` workflow: decoding errors must name the field."""

    sku: str
    qty: int


def expected_saga_output(base: int, fan: int = 2) -> int:
    """What ``saga`` returns for an input (the tests import this)."""
    return 2 * base + sum(2 * (base + i) for i in range(1, fan + 1))


def _parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = worker_arguments(__doc__.splitlines()[0])
    parser.add_argument("--max-workflow-tasks", type=int, default=100)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--user")
    parser.add_argument("--password")
    parser.add_argument("--token")
    parser.add_argument("--with-ghost", action="store_true", help="also host 'ghost'")
    parser.add_argument("--stall-retry-max", type=float, default=30.0)
    parser.add_argument("--log-level", default="info")
    return parse_worker_arguments(parser, argv)


def build_runtime(args: argparse.Namespace) -> WorkflowRuntime:
    """A runtime hosting what the arguments ask for."""
    connect: dict[str, Any] = {}
    if args.user:
        connect.update(user=args.user, password=args.password)
    if args.token:
        connect.update(token=args.token)
    runtime = WorkflowRuntime(
        args.nats_url,
        prefix=args.prefix,
        activity_lease=timedelta(seconds=args.lease),
        max_concurrent_activities=args.max_activities,
        max_concurrent_workflow_tasks=args.max_workflow_tasks,
        replicas=args.replicas,
        stall_retry_max=timedelta(seconds=args.stall_retry_max),
        connect_options=connect,
    )
    worker = args.worker_name

    if args.activities:
        record: Path = args.record

        @runtime.activity(name="count")
        async def count(ctx: ActivityContext, x: int) -> int:
            """Apply the effect (one line keyed by instance and task_execution_id); return 2x."""
            append_line(record, f"{worker} {ctx.workflow_id} {ctx.task_execution_id}")
            return 2 * x

        @runtime.activity(name="hold")
        async def hold(ctx: ActivityContext, seconds: float) -> str:
            """Apply the effect, then work ``seconds`` (longer than the lease) before answering."""
            append_line(record, f"{worker} {ctx.workflow_id} {ctx.task_execution_id}")
            await asyncio.sleep(seconds)
            return worker

    if args.workflows:

        @runtime.workflow(name="saga")
        async def saga(ctx: WorkflowContext, job: SagaInput) -> int:
            """One step, a durable timer, then a fan-out of ``fan`` steps; the sum of all."""
            first = await ctx.call_activity("count", input=job.base)
            if job.timer_s > 0:
                await ctx.create_timer(timedelta(seconds=job.timer_s))
            rest = await when_all(
                [ctx.call_activity("count", input=job.base + i) for i in range(1, job.fan + 1)]
            )
            return first + sum(rest)

        @runtime.workflow(name="held")
        async def held(ctx: WorkflowContext, seconds: float) -> str:
            """One ``hold`` activity of ``seconds``; the name of the worker that ran it."""
            return str(await ctx.call_activity("hold", input=seconds))

        @runtime.workflow(name="echo")
        async def echo(ctx: WorkflowContext, value: Any) -> Any:
            """Return the input unchanged."""
            return value

        @runtime.workflow(name="typed")
        async def typed(ctx: WorkflowContext, order: Order) -> str:
            """Needs an Order; anything else fails the instance naming the field."""
            return f"{order.qty} x {order.sku}"

        @runtime.workflow(name="nondeterministic")
        async def nondeterministic(ctx: WorkflowContext) -> str:
            """Awaits something that is not an engine task: a NonDeterminismError every time."""
            await asyncio.sleep(0)
            return "unreachable"

        if args.with_ghost:

            @runtime.workflow(name="ghost")
            async def ghost(ctx: WorkflowContext, x: int) -> int:
                """Registered only on fixed deployments (``--with-ghost``)."""
                return x + 1

    return runtime


async def main(argv: list[str] | None = None) -> None:
    """Start the runtime, say ``ready``, serve until SIGTERM."""
    args = _parse_args(argv)
    level = getattr(logging, args.log_level.upper())
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.KeyValueRenderer(key_order=["event", "level"]),
        ],
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(level),
    )
    runtime = build_runtime(args)
    await runtime.start()
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, _dump_state, runtime)
    print("ready", flush=True)
    await runtime.run()


def _dump_state(runtime: WorkflowRuntime) -> None:
    """On SIGUSR1: the connection's state and every task's stack to stderr, then ``dumped`` on
    stdout (a test that failed asks for this before it stops the workers)."""
    nc = runtime.broker.nc
    print(
        f"state: connected={nc.is_connected} reconnecting={nc.is_reconnecting} "
        f"connecting={nc.is_connecting} closed={nc.is_closed} url={nc.connected_url} "
        f"pending_bytes={nc.pending_data_size} stats={dict(nc.stats)}",
        file=sys.stderr,
    )
    reconnecting = getattr(nc, "_reconnection_task", None)  # nats-py internals, diagnosis only
    if reconnecting is not None and reconnecting.done() and not reconnecting.cancelled():
        print(f"reconnection task ended with {reconnecting.exception()!r}", file=sys.stderr)
    for task in asyncio.all_tasks():
        task.print_stack(limit=12, file=sys.stderr)
    sys.stderr.flush()
    print("dumped", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
