"""A logistics provider: hosts ``get_quote`` on task queue ``provider-<name>``.

Run one process per provider, each with its own name, price, latency and failure rate::

    python -m sample_order_app.provider --name budget --price 7.5 --latency 0.3
"""

from __future__ import annotations

import argparse
import asyncio
import random

from engine import ActivityContext, WorkflowRuntime, run_service
from sample_order_app._service import configure_logging, new_runtime, serve, service_parser
from sample_order_app.model import Quote, QuoteRequest

DEMO_PROVIDERS: dict[str, list[str]] = {
    "swift": ["--price", "14.90", "--latency", "0.2"],
    "budget": ["--price", "7.50", "--latency", "0.3", "--slow-latency", "5"],
    "parcelly": ["--price", "9.90", "--latency", "0.25", "--failure-rate", "0.25"],
}
"""The providers of the demo and of ``jetloom dev``, with their flags."""


class ProviderUnavailableError(RuntimeError):
    """The provider could not quote (a simulated outage)."""


def task_queue(name: str) -> str:
    """The task queue of provider ``name``."""
    return f"provider-{name}"


def build_runtime(args: argparse.Namespace) -> WorkflowRuntime:
    """A runtime hosting this provider's ``get_quote``."""
    runtime = new_runtime(args, task_queues=[task_queue(args.name)])
    register_quotes(runtime, [args])
    return runtime


def register_quotes(runtime: WorkflowRuntime, providers: list[argparse.Namespace]) -> None:
    """Register ``get_quote`` answering as each of ``providers`` (their flags, as
    ``argument_parser`` reads them) on that provider's task queue, which ``runtime`` must serve."""
    by_queue = {task_queue(args.name): args for args in providers}

    @runtime.activity(name="get_quote")
    async def get_quote(ctx: ActivityContext, request: QuoteRequest) -> Quote:
        """Price the shipment after the configured latency; fail at the configured rate."""
        args = by_queue[ctx.task_queue]
        name: str = args.name
        faults = request.order.faults
        slow = name in faults.slow_providers
        await asyncio.sleep(args.slow_latency if slow else args.latency)
        # Seeded per attempt, so a run of the demo is reproducible.
        draw = random.Random(f"{args.seed}:{name}:{ctx.task_execution_id}:{ctx.attempt}")
        if name in faults.failing_providers or draw.random() < args.failure_rate:
            raise ProviderUnavailableError("no capacity for this order right now")
        price = round(args.price + args.price_per_unit * request.order.quantity, 2)
        ctx.logger.info("provider.quoted", provider=name, order_id=request.order_id, price=price)
        return Quote(provider=name, price=price)


def argument_parser() -> argparse.ArgumentParser:
    """The provider's flags."""
    parser = service_parser(__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="provider name (task queue provider-NAME)")
    parser.add_argument("--price", type=float, default=10.0, help="base price of a shipment")
    parser.add_argument("--price-per-unit", type=float, default=0.0, help="added per unit")
    parser.add_argument("--latency", type=float, default=0.1, help="seconds to answer a quote")
    parser.add_argument(
        "--slow-latency",
        type=float,
        default=30.0,
        help="seconds to answer orders that list this provider in faults.slow_providers",
    )
    parser.add_argument(
        "--failure-rate", type=float, default=0.0, help="share of quotes that fail (0..1)"
    )
    parser.add_argument("--seed", default="jetloom", help="seed of the simulated failures")
    return parser


async def main(argv: list[str] | None = None) -> None:
    """Run one logistics provider until SIGTERM."""
    args = argument_parser().parse_args(argv)
    configure_logging(args.log_level)
    await serve(build_runtime(args), f"provider {args.name}")


if __name__ == "__main__":
    run_service(main())
