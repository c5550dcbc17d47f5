"""Fixtures of the sample's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import nats
import pytest
from nats.js.kv import KeyValue

from sample_order_app import stock


@pytest.fixture
async def stock_kv(nats_url: str, prefix: str) -> AsyncIterator[KeyValue]:
    """The sample's stock bucket on the test's namespace, read with plain nats-py."""
    nc = await nats.connect(nats_url)
    try:
        yield await stock.stock_bucket(nc.jetstream(), prefix)
    finally:
        await nc.close()
