"""Reading the instances bucket (``JetStreamBroker.read_records``) against a real nats-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from brokers import JetStreamBroker, RecordEntry


async def _until_marker(records: AsyncGenerator[RecordEntry | None, None]) -> list[RecordEntry]:
    entries: list[RecordEntry] = []
    async with asyncio.timeout(20):
        async for entry in records:
            if entry is None:
                return entries
            entries.append(entry)
    raise AssertionError("the reader ended without saying the current values were delivered")


class TestReadRecords:
    async def test_empty_bucket_says_so_at_once(self, broker: JetStreamBroker) -> None:
        """With no records the marker comes first, and listing gives nothing."""
        records = broker.read_records()
        try:
            assert [] == await _until_marker(records)
        finally:
            await records.aclose()
        assert [] == await broker.list_records()

    async def test_current_values_then_marker_then_changes(self, broker: JetStreamBroker) -> None:
        """Each key's latest value once, the marker, then later writes and purges in order."""
        kv = await broker.instances()
        for i in range(30):
            await kv.put(f"r{i}", b"old")
        for i in range(30):
            await kv.put(f"r{i}", f"v{i}".encode())
        await kv.purge("r29")
        records = broker.read_records()
        try:
            current = await _until_marker(records)
            await kv.put("r0", b"later")
            await kv.purge("r1")
            async with asyncio.timeout(20):
                changes = [await anext(records), await anext(records)]
        finally:
            await records.aclose()
        assert [(f"r{i}", f"v{i}".encode()) for i in range(29)] + [("r29", None)] == sorted(
            ((e.key, e.value) for e in current), key=lambda kv: int(kv[0][1:])
        )
        assert [("r0", b"later"), ("r1", None)] == [
            (e.key, e.value) for e in changes if e is not None
        ]

    async def test_a_lost_consumer_is_replaced_without_a_gap(
        self, broker: JetStreamBroker
    ) -> None:
        """If the reader's consumer disappears (a fail-over, a server restart), a new one goes
        on from the next revision: later changes still arrive, none twice."""
        kv = await broker.instances()
        await kv.put("before", b"1")
        stream = f"KV_{broker.subjects.instances_bucket}"
        records = broker.read_records()
        try:
            assert ["before"] == [e.key for e in await _until_marker(records)]
            names = (await broker.api(f"CONSUMER.NAMES.{stream}", None))["consumers"]
            for name in names:
                await broker.api(f"CONSUMER.DELETE.{stream}.{name}", None)
            await kv.put("after", b"2")
            await kv.put("later", b"3")
            async with asyncio.timeout(30):
                changes = [await anext(records), await anext(records)]
        finally:
            await records.aclose()
        assert [("after", b"2"), ("later", b"3")] == [
            (e.key, e.value) for e in changes if e is not None
        ]

    async def test_listing_is_complete_every_time(self, broker: JetStreamBroker) -> None:
        """Listing right after writes never comes back short (a push watch could say "no more"
        before its first values were handled)."""
        kv = await broker.instances()
        for i in range(3):
            await kv.put(f"l{i}", b"x")
        counts = await asyncio.gather(*[broker.list_records() for _ in range(50)])
        assert [3] * 50 == [len(values) for values in counts]


class TestClaimRecord:
    async def test_claim_wins_once_and_release_puts_back(self, broker: JetStreamBroker) -> None:
        """Of two claims on the record as read, one wins; releasing the winner's write restores
        what was there (or no record)."""
        first = await broker.claim_record("c1", b"one", None)
        second = await broker.claim_record("c1", b"two", None)
        assert first is not None and second is None
        await broker.release_record("c1", None, first)
        assert await broker.get_record("c1") is None
        created = await broker.claim_record("c1", b"base", None)
        assert created is not None
        claimed = await broker.claim_record("c1", b"mine", created)
        assert claimed is not None and await broker.claim_record("c1", b"late", created) is None
        await broker.release_record("c1", b"base", claimed)
        stored = await broker.get_record("c1")
        assert stored is not None and b"base" == stored[0]

    async def test_release_leaves_a_newer_write(self, broker: JetStreamBroker) -> None:
        """A release does not undo what someone else wrote after the claim."""
        claimed = await broker.claim_record("c2", b"mine", None)
        assert claimed is not None
        newer = await broker.claim_record("c2", b"newer", claimed)
        assert newer is not None
        await broker.release_record("c2", None, claimed)
        stored = await broker.get_record("c2")
        assert stored is not None and b"newer" == stored[0]
