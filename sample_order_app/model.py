"""The messages the services exchange: one module of msgspec Structs, the sample's schema.

Plain msgspec, no engine import, so the storefront (which speaks only nats-py) shares them.
"""

from __future__ import annotations

from typing import Literal

import msgspec

OrderStatus = Literal["shipped", "rejected", "failed"]


class Faults(msgspec.Struct, frozen=True, omit_defaults=True):
    """Fault injection carried by an order, so demos and tests can pick an outcome."""

    fail_shipping: bool = False
    """Shipping refuses every attempt to register this order's shipment."""
    slow_providers: list[str] = []
    """Providers that answer this order's quote only after their ``--slow-latency``."""
    failing_providers: list[str] = []
    """Providers whose quote for this order fails."""


class Order(msgspec.Struct, frozen=True):
    """What the storefront places: one SKU, a quantity and where to ship it."""

    sku: str
    quantity: int
    destination: str = "Berlin"
    faults: Faults = Faults()


class ReserveRequest(msgspec.Struct, frozen=True):
    """Reserve ``quantity`` of ``sku`` for an order (idempotent per order id)."""

    order_id: str
    sku: str
    quantity: int


class Reservation(msgspec.Struct, frozen=True):
    """The inventory's answer to ``reserve``: reserved or not, and the stock around it."""

    reserved: bool
    available_before: int
    available_after: int
    reason: str = ""


class QuoteRequest(msgspec.Struct, frozen=True):
    """What every logistics provider is asked to price."""

    order_id: str
    order: Order


class Quote(msgspec.Struct, frozen=True):
    """One provider's price for shipping an order."""

    provider: str
    price: float


class ShipmentRequest(msgspec.Struct, frozen=True):
    """Registering the shipment of an order with the chosen provider."""

    order_id: str
    order: Order
    provider: str
    price: float


class Shipment(msgspec.Struct, frozen=True):
    """A registered shipment."""

    tracking_id: str
    provider: str


class RestoreRequest(msgspec.Struct, frozen=True):
    """Compensation: give back what ``reserve`` took for this order."""

    order_id: str
    sku: str


class OrderResult(msgspec.Struct, frozen=True):
    """The outcome of one ``order_processing`` instance (the workflow's output)."""

    order_id: str
    status: OrderStatus
    provider: str = ""
    price: float | None = None
    tracking_id: str = ""
    reason: str = ""
    skipped_providers: dict[str, str] = {}
    """Providers whose quote was not used, with why (``timed out``, the failure)."""
