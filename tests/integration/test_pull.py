"""PullStream and settle against a real nats-server."""

from __future__ import annotations

import asyncio

import pytest

from brokers import JetStreamBroker, PullStream


async def _next(stream: PullStream, timeout: float = 10.0) -> list[str]:
    """The subjects of the next batch that arrives within ``timeout``."""
    async with asyncio.timeout(timeout):
        while True:
            batch = await stream.next_batch(10, timeout=0.2)
            if batch:
                return [m.subject for m in batch]


class TestPullStream:
    """Continuous pulls with capacity-based flow control."""

    async def test_a_consumer_created_after_a_503_is_served(self, broker: JetStreamBroker) -> None:
        """Pulling from a consumer with no leader (503, no responders) frees the requested
        capacity and asks again, so messages flow once the consumer exists."""
        s = broker.subjects
        # Heartbeats far apart, so only the 503 (not silence) can bring the request back soon.
        stream = PullStream(
            broker.nc, s.work_stream, "late", 4, heartbeat=5.0, retry_delay=0.1
        )
        await stream.start()
        try:
            await broker.ensure_consumer(
                "late", [s.inbox("*")], ack_wait=30, max_ack_pending=100
            )
            await broker.publish(s.inbox("a"), b"{}")
            assert [s.inbox("a")] == await _next(stream, timeout=5.0)
        finally:
            await stream.stop()


class TestSettle:
    """Confirmed acknowledgements."""

    @pytest.mark.parametrize("confirm", [True, False])
    async def test_ack_and_delayed_nak(self, broker: JetStreamBroker, confirm: bool) -> None:
        """An ack (confirmed, or only sent as on a single server) removes the message; a nak
        brings it back after its delay."""
        s = broker.subjects
        await broker.ensure_consumer("settle", [s.inbox("*")], ack_wait=30, max_ack_pending=100)
        stream = PullStream(broker.nc, s.work_stream, "settle", 2)
        await stream.start()
        try:
            await broker.publish(s.inbox("x"), b"{}")
            await broker.publish(s.inbox("y"), b"{}")
            got: list[str] = []
            msgs = []
            while len(got) < 2:
                batch = await stream.next_batch(10)
                msgs += batch
                got += [m.subject for m in batch]
            by_subject = {m.subject: m for m in msgs}
            assert [True, True] == [
                await by_subject[s.inbox("x")].settle(confirm=confirm),
                await by_subject[s.inbox("y")].settle(nak_delay=0.1, confirm=confirm),
            ]
            stream.release(2)
            assert [s.inbox("y")] == await _next(stream)
            info = await broker.js.consumer_info(s.work_stream, "settle")
            assert (0, 1) == (info.num_pending, info.num_ack_pending)  # x gone, y in hand
        finally:
            await stream.stop()
