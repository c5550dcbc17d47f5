"""Large payloads in history, dispatches and records: offload before writing, resolve on read.

Payload fields (``input``, ``result``, ``data``, ``output``, ``custom_status``, ``propagated``)
larger than the store's threshold are replaced by a reference to an Object Store copy (see
``brokers._payload_store``) just before a struct is written, and replaced back by the value just
after it is read, so workflow and activity code, the executor and the sticky cache only ever see
values.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

import msgspec

from brokers import PayloadRef, PayloadStore, payload_ref
from engine.core.events import WorkItem

PAYLOAD_FIELDS = ("input", "result", "data", "output", "custom_status", "propagated")

S = TypeVar("S", bound=msgspec.Struct)


def _payloads(value: msgspec.Struct) -> Iterator[tuple[str, msgspec.Raw]]:
    for name in PAYLOAD_FIELDS:
        raw = getattr(value, name, None)
        if isinstance(raw, msgspec.Raw):
            yield name, raw


async def offload(store: PayloadStore, scope: str, value: S) -> S:
    """``value`` with every payload over the threshold replaced by a reference.

    ``scope`` is the instance the payload belongs to (it names the stored object).
    """
    changes: dict[str, Any] = {}
    for name, raw in _payloads(value):
        if len(raw) > store.threshold:
            changes[name] = await store.offload(scope, raw)
    if isinstance(value, WorkItem):
        events = [await offload(store, scope, e) for e in value.events]
        if any(new is not old for new, old in zip(events, value.events, strict=True)):
            changes["events"] = events
    return msgspec.structs.replace(value, **changes) if changes else value


async def offload_all(store: PayloadStore, scope: str, values: Iterable[S]) -> list[S]:
    """``offload`` of each value, in order."""
    return [await offload(store, scope, v) for v in values]


async def resolve(store: PayloadStore, value: S) -> S:
    """``value`` with every payload reference replaced by the stored value.

    Raises:
        PayloadMissingError: a referenced object is gone.
    """
    changes: dict[str, Any] = {}
    for name, raw in _payloads(value):
        if payload_ref(raw) is not None:
            changes[name] = msgspec.Raw(await store.resolve(bytes(raw)))
    if isinstance(value, WorkItem):
        events = [await resolve(store, e) for e in value.events]
        if any(new is not old for new, old in zip(events, value.events, strict=True)):
            changes["events"] = events
    return msgspec.structs.replace(value, **changes) if changes else value


async def resolve_all(store: PayloadStore, values: Iterable[S]) -> list[S]:
    """``resolve`` of each value, in order."""
    return [await resolve(store, v) for v in values]


def stored_names(
    store: PayloadStore, scope: str, values: Iterable[msgspec.Struct]
) -> set[str]:
    """The object names that ``offload(store, scope, v)`` gives the payloads of ``values``."""
    names: set[str] = set()
    for value in values:
        nested = value.events if isinstance(value, WorkItem) else []
        for _, raw in [*_payloads(value), *(p for e in nested for p in _payloads(e))]:
            if len(raw) > store.threshold:
                names.add(store.name_of(scope, raw))
    return names


def refs_in(values: Iterable[msgspec.Struct], scope: str | None = None) -> list[PayloadRef]:
    """The payload references in ``values`` (only those stored under ``scope``, if given)."""
    found: list[PayloadRef] = []
    for value in values:
        nested = value.events if isinstance(value, WorkItem) else []
        for name_raw in [*_payloads(value), *(p for e in nested for p in _payloads(e))]:
            ref = payload_ref(name_raw[1])
            if ref is not None and (scope is None or ref.name.startswith(f"{scope}/")):
                found.append(ref)
    return found
