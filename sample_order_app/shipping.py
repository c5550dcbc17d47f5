"""The shipping service: hosts ``register_shipment`` on the ``shipping`` task queue.

Registration fails at ``--failure-rate``, and always for orders with ``faults.fail_shipping``
or whose id starts with ``fail-ship``. For crash tests, ``--hang-prefix`` makes attempts for
matching orders block until the process is killed. Every attempt announces itself on the core
NATS subject ``<prefix>.sample.shipping.started`` (body: the order id) before doing anything.

Usage::

    python -m sample_order_app.shipping [--failure-rate 0.2] [--activity-lease 30]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
from collections.abc import Callable

import msgspec
from nats.aio.client import Client as NATS
from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from engine import ActivityContext, WorkflowRuntime, run_service
from sample_order_app._service import (
    configure_logging,
    connect,
    new_runtime,
    serve,
    service_parser,
)
from sample_order_app.model import Shipment, ShipmentRequest

TASK_QUEUE = "shipping"
FORCED_FAILURE_PREFIX = "fail-ship"


class ShipmentRejectedError(RuntimeError):
    """The carrier refused to register the shipment."""


def started_subject(prefix: str) -> str:
    """The core NATS subject on which every registration attempt announces its order id."""
    return f"{prefix}.sample.shipping.started"


async def shipments_bucket(nc: NATS, prefix: str) -> KeyValue:
    """The bucket of registered shipments (one key per order), created if missing."""
    return await nc.jetstream().create_key_value(bucket=f"{prefix}_sample_shipments")


def build_runtime(args: argparse.Namespace, nc: NATS, shipments: KeyValue) -> WorkflowRuntime:
    """A runtime hosting ``register_shipment``; shipments are recorded in ``shipments``."""
    runtime = new_runtime(args, task_queues=[TASK_QUEUE])
    register_shipping(runtime, args, lambda: (nc, shipments))
    return runtime


def register_shipping(
    runtime: WorkflowRuntime,
    args: argparse.Namespace,
    connection: Callable[[], tuple[NATS, KeyValue]],
) -> None:
    """Register ``register_shipment`` on ``runtime`` (which must serve the ``shipping`` task
    queue), behaving as ``args`` (the flags ``argument_parser`` reads) say; ``connection``
    gives the NATS connection and the shipments bucket when an activity runs."""

    @runtime.activity(name="register_shipment")
    async def register_shipment(ctx: ActivityContext, request: ShipmentRequest) -> Shipment:
        """Register the shipment once per order (a redelivery returns the same tracking id)."""
        nc, shipments = connection()
        await nc.publish(started_subject(args.prefix), request.order_id.encode())
        await nc.flush()
        if args.hang_prefix and request.order_id.startswith(args.hang_prefix):
            ctx.logger.warning("shipping.hanging", order_id=request.order_id)
            await asyncio.Event().wait()  # until SIGKILL: the crash tests' window
        draw = random.Random(f"{args.seed}:{request.order_id}:{ctx.attempt}")
        if request.order.faults.fail_shipping or request.order_id.startswith(FORCED_FAILURE_PREFIX):
            raise ShipmentRejectedError(f"carrier refused order {request.order_id} (forced)")
        if draw.random() < args.failure_rate:
            raise ShipmentRejectedError(f"carrier unavailable (attempt {ctx.attempt})")
        digest = hashlib.sha1(ctx.task_execution_id.encode()).hexdigest()[:10].upper()
        shipment = Shipment(
            tracking_id=f"{request.provider[:3].upper()}-{digest}", provider=request.provider
        )
        try:
            await shipments.create(request.order_id, msgspec.json.encode(shipment))
        except KeyWrongLastSequenceError:  # registered before (a redelivery): keep the first
            entry = await shipments.get(request.order_id)
            assert entry.value is not None
            shipment = msgspec.json.decode(entry.value, type=Shipment)
        ctx.logger.info(
            "shipping.registered", order_id=request.order_id, tracking_id=shipment.tracking_id
        )
        return shipment


def argument_parser() -> argparse.ArgumentParser:
    """The shipping service's flags."""
    parser = service_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--failure-rate", type=float, default=0.0, help="share of attempts that fail (0..1)"
    )
    parser.add_argument("--seed", default="jetloom", help="seed of the simulated failures")
    parser.add_argument(
        "--hang-prefix",
        default="",
        help="attempts for order ids with this prefix block until killed (crash tests)",
    )
    return parser


async def main(argv: list[str] | None = None) -> None:
    """Run the shipping service until SIGTERM."""
    args = argument_parser().parse_args(argv)
    configure_logging(args.log_level)
    nc = await connect(args)
    try:
        shipments = await shipments_bucket(nc, args.prefix)
        await serve(build_runtime(args, nc, shipments), "shipping")
    finally:
        await nc.close()


if __name__ == "__main__":
    run_service(main())
