"""Inventory state in a JetStream KV bucket, with plain nats-py (no engine import).

One key per SKU holds a ``StockRecord``: the units available *and* every order's hold on them.
Reserving is a single compare-and-set of that key that checks the stock, decrements it and
records the order, so it is atomic and idempotent: a redelivered or retried ``reserve`` finds
its hold and changes nothing. (Keeping holds under separate keys would need two writes, and a
crash between them would reserve twice.) Restoring flips the hold to ``restored`` in the same
way, so compensation also happens at most once per order.
"""

from __future__ import annotations

import contextlib
from typing import Literal

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from sample_order_app.model import Reservation

HoldState = Literal["reserved", "restored"]


class Hold(msgspec.Struct):
    """What one order took from a SKU's stock."""

    quantity: int
    state: HoldState = "reserved"


class StockRecord(msgspec.Struct):
    """The value of one SKU's key: available units and the holds of orders on it."""

    available: int
    holds: dict[str, Hold] = {}


_CAS_ATTEMPTS = 100


def bucket_name(prefix: str) -> str:
    """The KV bucket of the stock in namespace ``prefix``."""
    return f"{prefix}_sample_stock"


async def stock_bucket(js: JetStreamContext, prefix: str) -> KeyValue:
    """The stock bucket, created if missing (idempotent, safe from many processes)."""
    return await js.create_key_value(bucket=bucket_name(prefix), history=5)


async def seed_stock(kv: KeyValue, levels: dict[str, int]) -> None:
    """Set each SKU's available units, forgetting its holds (for demos and tests)."""
    for sku, available in levels.items():
        await kv.put(sku, msgspec.json.encode(StockRecord(available=available)))


async def seed_missing_stock(kv: KeyValue, levels: dict[str, int]) -> None:
    """Give each SKU that has no record yet its available units; known SKUs keep theirs."""
    for sku, available in levels.items():
        with contextlib.suppress(KeyWrongLastSequenceError):  # stocked before: keep it
            await kv.create(sku, msgspec.json.encode(StockRecord(available=available)))


async def read_stock(kv: KeyValue, sku: str) -> StockRecord | None:
    """A SKU's record, or None if the SKU is unknown."""
    try:
        entry = await kv.get(sku)
    except KeyNotFoundError:
        return None
    if entry.value is None:
        return None
    return msgspec.json.decode(entry.value, type=StockRecord)


async def available(kv: KeyValue, sku: str) -> int | None:
    """Units of ``sku`` available now, or None if the SKU is unknown."""
    record = await read_stock(kv, sku)
    return None if record is None else record.available


async def reserve(kv: KeyValue, order_id: str, sku: str, quantity: int) -> Reservation:
    """Check and decrement ``sku`` by ``quantity`` for ``order_id`` in one compare-and-set.

    Insufficient stock changes nothing. Reserving again for the same order returns the first
    answer without touching the stock.
    """
    if quantity < 1:
        return Reservation(False, 0, 0, reason=f"quantity must be positive, got {quantity}")
    for _ in range(_CAS_ATTEMPTS):
        try:
            entry = await kv.get(sku)
        except KeyNotFoundError:
            return Reservation(False, 0, 0, reason=f"unknown sku {sku!r}")
        assert entry.value is not None
        record = msgspec.json.decode(entry.value, type=StockRecord)
        held = record.holds.get(order_id)
        if held is not None:  # a retry or redelivery: the first reservation stands
            if held.state == "restored":
                return Reservation(
                    False,
                    record.available,
                    record.available,
                    reason=f"order {order_id!r} was already compensated",
                )
            return Reservation(True, record.available + held.quantity, record.available)
        if record.available < quantity:
            return Reservation(
                False,
                record.available,
                record.available,
                reason=f"insufficient stock of {sku!r}: {quantity} ordered, "
                f"{record.available} available",
            )
        before = record.available
        record.available -= quantity
        record.holds[order_id] = Hold(quantity)
        try:
            await kv.update(sku, msgspec.json.encode(record), last=entry.revision)
        except KeyWrongLastSequenceError:
            continue  # someone else changed this SKU meanwhile: read again
        return Reservation(True, before, record.available)
    raise RuntimeError(f"could not reserve {sku!r}: {_CAS_ATTEMPTS} concurrent updates won")


async def restore(kv: KeyValue, order_id: str, sku: str) -> int:
    """Give back what ``order_id`` holds of ``sku``, at most once.

    Returns:
        The units returned to stock now (0 if there was nothing to restore).
    """
    for _ in range(_CAS_ATTEMPTS):
        try:
            entry = await kv.get(sku)
        except KeyNotFoundError:
            return 0
        assert entry.value is not None
        record = msgspec.json.decode(entry.value, type=StockRecord)
        held = record.holds.get(order_id)
        if held is None or held.state == "restored":
            return 0
        record.available += held.quantity
        held.state = "restored"
        try:
            await kv.update(sku, msgspec.json.encode(record), last=entry.revision)
        except KeyWrongLastSequenceError:
            continue
        return held.quantity
    raise RuntimeError(f"could not restore {sku!r}: {_CAS_ATTEMPTS} concurrent updates won")
