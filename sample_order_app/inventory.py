"""The inventory service: hosts ``reserve`` and ``restore`` on the ``inventory`` task queue.

Usage::

    python -m sample_order_app.inventory [--seed widget=10 ...] [--prefix jetloom]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from nats.js.kv import KeyValue

from engine import ActivityContext, WorkflowRuntime, run_service
from sample_order_app import stock
from sample_order_app._service import (
    configure_logging,
    connect,
    new_runtime,
    serve,
    service_parser,
)
from sample_order_app.model import Reservation, ReserveRequest, RestoreRequest

TASK_QUEUE = "inventory"


def build_runtime(args: argparse.Namespace, kv: KeyValue) -> WorkflowRuntime:
    """A runtime hosting the inventory activities on the stock bucket ``kv``."""
    runtime = new_runtime(args, task_queues=[TASK_QUEUE])
    register_inventory(runtime, lambda: kv)
    return runtime


def register_inventory(runtime: WorkflowRuntime, stock_bucket: Callable[[], KeyValue]) -> None:
    """Register ``reserve`` and ``restore`` on ``runtime`` (which must serve the ``inventory``
    task queue); ``stock_bucket`` gives the stock bucket when an activity runs."""

    @runtime.activity(name="reserve")
    async def reserve(ctx: ActivityContext, request: ReserveRequest) -> Reservation:
        """Check and decrement the stock in one compare-and-set (idempotent per order)."""
        kv = stock_bucket()
        reservation = await stock.reserve(kv, request.order_id, request.sku, request.quantity)
        ctx.logger.info(
            "inventory.reserve",
            order_id=request.order_id,
            sku=request.sku,
            reserved=reservation.reserved,
            available=reservation.available_after,
        )
        return reservation

    @runtime.activity(name="restore")
    async def restore(ctx: ActivityContext, request: RestoreRequest) -> int:
        """Give back what the order reserved (compensation; at most once per order)."""
        restored = await stock.restore(stock_bucket(), request.order_id, request.sku)
        ctx.logger.info(
            "inventory.restore", order_id=request.order_id, sku=request.sku, restored=restored
        )
        return restored


def _parse_seed(value: str) -> tuple[str, int]:
    sku, _, units = value.partition("=")
    if not sku or not units.isdigit():
        raise argparse.ArgumentTypeError(f"expected SKU=UNITS, got {value!r}")
    return sku, int(units)


async def main(argv: list[str] | None = None) -> None:
    """Run the inventory service until SIGTERM."""
    parser = service_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--seed",
        type=_parse_seed,
        action="append",
        default=[],
        metavar="SKU=UNITS",
        help="set a SKU's stock at start-up (repeatable)",
    )
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    nc = await connect(args)
    try:
        kv = await stock.stock_bucket(nc.jetstream(), args.prefix)
        await stock.seed_stock(kv, dict(args.seed))
        await serve(build_runtime(args, kv), "inventory")
    finally:
        await nc.close()


if __name__ == "__main__":
    run_service(main())
