"""Continuous pull from a durable consumer, with capacity-based flow control.

nats-py's ``fetch(batch)`` lingers to fill its batch; a worker wants each message the moment it
is stored, but never more unfinished messages than it has room for. ``PullStream`` keeps pull
requests outstanding for exactly the capacity the caller grants (``release``), and hands out
messages as they arrive. Status messages of the pull protocol (ADR-13) keep the accounting right:
408/409 carry ``Nats-Pending-Messages`` (what an ended request will no longer deliver), 100 is an
idle heartbeat; silence longer than a request's life means the server forgot our requests (a
reconnect), so they are issued again.
"""

from __future__ import annotations

import asyncio
import json
import time

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription


class PullStream:
    """Messages of one durable pull consumer, at most ``capacity`` unfinished at a time."""

    def __init__(
        self,
        nc: NATS,
        stream: str,
        consumer: str,
        capacity: int,
        *,
        expires: float = 10.0,
        heartbeat: float = 2.0,
    ) -> None:
        self._nc = nc
        self._subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._capacity = capacity
        # Pull in quarters of the capacity, not a request per finished message: each request
        # costs the server (and us) as much as a batch of messages.
        self._min_request = max(1, capacity // 4)
        self._in_hand = 0  # delivered to the caller and not yet released
        self._outstanding = 0  # requested from the server, not yet delivered nor expired
        self._expires = expires
        self._heartbeat = heartbeat
        self._inbox = nc.new_inbox()
        self._queue: asyncio.Queue[Msg] = asyncio.Queue()
        self._sub: Subscription | None = None
        self._last_heard = time.monotonic()
        self._stopped = False

    async def start(self) -> None:
        """Subscribe to the delivery inbox and request the first messages."""
        self._sub = await self._nc.subscribe(self._inbox, cb=self._on_msg)
        await self._request_more()

    async def stop(self) -> None:
        """Stop receiving (outstanding requests expire on the server by themselves)."""
        self._stopped = True
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    async def _on_msg(self, msg: Msg) -> None:
        self._last_heard = time.monotonic()
        headers = msg.headers or {}
        status = headers.get("Status")
        if not status:
            self._outstanding = max(0, self._outstanding - 1)
            self._in_hand += 1
            self._queue.put_nowait(msg)
            return
        if status == "100":  # idle heartbeat (or flow control): the requests are alive
            return
        pending = headers.get("Nats-Pending-Messages")
        if pending is not None:
            self._outstanding = max(0, self._outstanding - int(pending))
        elif status in ("408", "409", "404"):
            self._outstanding = 0
        await self._request_more()

    def _wanted(self) -> int:
        """How many messages to request now (0: wait until a quarter of the room is free)."""
        want = self._capacity - self._in_hand - self._outstanding
        if want < self._min_request and self._outstanding > 0:
            return 0
        return max(0, want)

    async def _request_more(self) -> None:
        want = self._wanted()
        if want <= 0 or self._stopped or self._nc.is_closed:
            return
        request = {
            "batch": want,
            "expires": int(self._expires * 1e9),
            "idle_heartbeat": int(self._heartbeat * 1e9),
        }
        self._outstanding += want
        try:
            await self._nc.publish(self._subject, json.dumps(request).encode(), self._inbox)
        except Exception:
            self._outstanding -= want  # not sent (disconnected): ask again later

    def release(self, count: int = 1) -> None:
        """The caller finished ``count`` messages: room for as many new ones."""
        self._in_hand = max(0, self._in_hand - count)
        if self._wanted():
            asyncio.get_running_loop().create_task(self._request_more())

    async def next_batch(self, max_batch: int, timeout: float = 1.0) -> list[Msg]:
        """Wait up to ``timeout`` for a message, then take whatever else is already here."""
        try:
            first = await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            if time.monotonic() - self._last_heard > self._expires + 2 * self._heartbeat:
                # No heartbeat, no expiry notice: the server lost our requests.
                self._outstanding = 0
                self._last_heard = time.monotonic()
            await self._request_more()
            return []
        batch = [first]
        while len(batch) < max_batch and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        return batch
