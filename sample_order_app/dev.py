"""The whole saga in one process, for ``jetloom dev``::

    jetloom dev sample_order_app/dev.py        # or: jetloom dev sample_order_app.dev

The services of ``python -m sample_order_app demo`` each run their own runtime in their own
process, built in their ``main()``. Here one runtime at module level (``wfr``), which
``jetloom dev`` finds and hosts, registers all of it: the ``order_processing`` workflow
(orchestrator), ``reserve`` and ``restore`` (inventory), ``get_quote`` as each of the demo's
providers (swift, budget, parcelly) and ``register_shipment`` (shipping), each activity on the
task queue its service serves, with the services' default flags. Starting, it opens the stock
and shipment buckets and stocks the SKUs of ``DEV_STOCK`` that have no stock yet, so an order
can be placed at once::

    jetloom start order_processing --input '{"sku": "widget", "quantity": 2}' --wait
    jetloom start order_processing --id fail-ship-1 --input '{"sku": "widget", "quantity": 1}'
"""

from __future__ import annotations

from nats.aio.client import Client as NATS
from nats.js.kv import KeyValue

from brokers import connect_nats
from engine import WorkflowRuntime
from sample_order_app import inventory, provider, shipping, stock
from sample_order_app.orchestrator import SagaConfig, register_saga

DEV_STOCK = {"widget": 10, "gadget": 6, "gizmo": 2}
"""Units of each SKU stocked when ``jetloom dev`` first hosts the saga on a server."""


class SagaRuntime(WorkflowRuntime):
    """A runtime that, as the inventory and shipping services do in their ``main()``, opens
    its own NATS connection and the sample's buckets when it starts, and closes them after it
    has stopped."""

    def __init__(self) -> None:
        queues = [provider.task_queue(name) for name in provider.DEMO_PROVIDERS]
        super().__init__(task_queues=[inventory.TASK_QUEUE, shipping.TASK_QUEUE, *queues])
        self._nc: NATS | None = None
        self._stock: KeyValue | None = None
        self._shipments: KeyValue | None = None

    async def start(self) -> None:
        """Open the connection and buckets, stock ``DEV_STOCK``, then start the runtime."""
        self._nc = await connect_nats(self.nats_url, **self.connect_options)
        self._stock = await stock.stock_bucket(self._nc.jetstream(), self.subjects.prefix)
        await stock.seed_missing_stock(self._stock, DEV_STOCK)
        self._shipments = await shipping.shipments_bucket(self._nc, self.subjects.prefix)
        await super().start()

    async def shutdown(self, timeout: float = 30.0) -> None:
        """Stop the runtime (finishing in-flight activities), then close the connection."""
        await super().shutdown(timeout)
        if self._nc is not None:
            await self._nc.close()

    def stock_bucket(self) -> KeyValue:
        """The stock bucket (once started)."""
        if self._stock is None:
            raise RuntimeError("the saga runtime is not started: call 'await wfr.start()'")
        return self._stock

    def shipping_connection(self) -> tuple[NATS, KeyValue]:
        """The NATS connection and the shipments bucket (once started)."""
        if self._nc is None or self._shipments is None:
            raise RuntimeError("the saga runtime is not started: call 'await wfr.start()'")
        return self._nc, self._shipments


def _flags(*args: str) -> list[str]:
    """A service's flags: ``args`` in this runtime's namespace."""
    return ["--prefix", wfr.subjects.prefix, *args]


wfr = SagaRuntime()
register_saga(wfr, SagaConfig(providers=tuple(provider.DEMO_PROVIDERS)))
inventory.register_inventory(wfr, wfr.stock_bucket)
provider.register_quotes(
    wfr,
    [
        provider.argument_parser().parse_args(_flags("--name", name, *flags))
        for name, flags in provider.DEMO_PROVIDERS.items()
    ],
)
shipping.register_shipping(
    wfr, shipping.argument_parser().parse_args(_flags()), wfr.shipping_connection
)
