"""The storefront: places orders by publishing start events with plain nats-py.

It imports nothing from the engine: starting a workflow is just a JetStream publish of
``{"instance_id": ..., "input": ...}`` to ``<prefix>.start.order_processing``, which any NATS
client in any language can do. With OTEL_EXPORTER_OTLP_ENDPOINT set, each order gets a
``place_order`` span whose W3C ``traceparent`` header makes it the root of the saga's trace.

Usage::

    python -m sample_order_app.storefront --order-id order-42 --sku widget --quantity 2
    python -m sample_order_app.storefront --batch orders.jsonl   # or --batch - (stdin)

A batch holds one start event per line: ``{"instance_id": "order-42", "input": {...}}``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Iterable

import msgspec
import nats
from nats.js import JetStreamContext
from nats.js.errors import NoStreamResponseError
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import TracerProvider

from brokers import nats_url
from sample_order_app.model import Faults, Order

WORKFLOW_NAME = "order_processing"


class StartEvent(msgspec.Struct, frozen=True):
    """The public start event of a workflow (see docs/protocol.md)."""

    instance_id: str
    input: Order


def start_subject(prefix: str) -> str:
    """Where order_processing start events go."""
    return f"{prefix}.start.{WORKFLOW_NAME}"


async def place_orders(js: JetStreamContext, prefix: str, events: Iterable[StartEvent]) -> int:
    """Publish each start event with JetStream; returns how many were placed.

    ``Nats-Msg-Id`` makes a retried publish of the same order a duplicate the server drops.
    """
    placed = 0
    tracer = trace.get_tracer("storefront")
    for event in events:
        # The order's trace starts here: the traceparent header carries it into the workflow.
        with tracer.start_as_current_span(
            f"place_order {event.instance_id}",
            kind=trace.SpanKind.PRODUCER,
            attributes={"messaging.system": "nats",
                        "messaging.destination.name": start_subject(prefix),
                        "order.id": event.instance_id},
        ):
            headers = {"Nats-Msg-Id": f"start-{event.instance_id}"}
            propagate.inject(headers)
            ack = await js.publish(
                start_subject(prefix), msgspec.json.encode(event), headers=headers
            )
        print(f"placed {event.instance_id} stream={ack.stream} seq={ack.seq}", flush=True)
        placed += 1
    return placed


def _configure_tracing() -> TracerProvider | None:
    """Export spans over OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT is set (plain SDK setup)."""
    if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "order-storefront"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider


def _read_batch(path: str) -> list[StartEvent]:
    if path == "-":
        text = sys.stdin.read()
    else:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    return [msgspec.json.decode(line, type=StartEvent) for line in text.splitlines() if line]


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nats-url", default=nats_url())
    parser.add_argument("--prefix", default="jetloom")
    parser.add_argument("--batch", help="JSON-lines file of start events ('-': stdin)")
    parser.add_argument("--order-id")
    parser.add_argument("--sku")
    parser.add_argument("--quantity", type=int, default=1)
    parser.add_argument("--destination", default="Berlin")
    parser.add_argument("--fail-shipping", action="store_true", help="force shipping to fail")
    parser.add_argument("--slow-provider", action="append", default=[], metavar="NAME")
    parser.add_argument("--failing-provider", action="append", default=[], metavar="NAME")
    args = parser.parse_args(argv)
    if not args.batch and not (args.order_id and args.sku):
        parser.error("give --batch FILE, or --order-id and --sku")
    return args


async def main(argv: list[str] | None = None) -> int:
    """Place the orders given on the command line; returns the exit code."""
    args = _parse_args(argv)
    if args.batch:
        events = _read_batch(args.batch)
    else:
        faults = Faults(args.fail_shipping, args.slow_provider, args.failing_provider)
        order = Order(args.sku, args.quantity, args.destination, faults)
        events = [StartEvent(args.order_id, order)]
    provider = _configure_tracing()
    nc = await nats.connect(servers=args.nats_url.split(","))
    try:
        await place_orders(nc.jetstream(), args.prefix, events)
    except NoStreamResponseError:
        print(
            f"no JetStream stream takes {start_subject(args.prefix)!r}: start the orchestrator "
            "(it creates the streams) or check --prefix",
            file=sys.stderr,
        )
        return 1
    finally:
        await nc.close()
        if provider is not None:
            provider.shutdown()  # flush the spans before exiting
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
