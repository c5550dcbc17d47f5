"""Continuous pull from a durable consumer, with capacity-based flow control; confirmed acks.

nats-py's ``fetch(batch)`` lingers to fill its batch; a worker wants each message the moment it
is stored, but never more unfinished messages than it has room for. ``PullStream`` keeps pull
requests outstanding for exactly the capacity the caller grants (``release``), and hands out
messages as they arrive. Each pull request has its own reply subject, so the status messages
of the pull protocol (ADR-13) settle the accounting of exactly that request (messages count
against the oldest open request, which the server serves first): 408/409/404 end it,
503 (no responders: the consumer has no leader right now) means it never arrived, 100 is an idle
heartbeat. Two missed heartbeats mean the server forgot our requests (a reconnect, a new
consumer leader), so they are issued again.

``settle`` acknowledges (or naks) a message. On replicated streams it waits for the server to
confirm, retrying while the consumer's leader changes: an acknowledgement lost in a fail-over
would otherwise leave the message pending until its lease runs out. On a single server a
published acknowledgement either arrives or the server went away (and the message is
redelivered and deduplicated), so it is not worth a round trip per message.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from datetime import datetime

import nats.errors
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from brokers._errors import TRANSIENT_ERRORS, retry_transient
from brokers._requests import request

log = structlog.get_logger("jetloom.pull")

_SETTLE_RETRYABLE: tuple[type[Exception], ...] = (
    *TRANSIENT_ERRORS,
    nats.errors.OutboundBufferLimitError,
)


async def settle(
    msg: Msg,
    *,
    nak_delay: float | None = None,
    confirm: bool = True,
    timeout: float = 2.0,
    give_up_after: float = 30.0,
) -> bool:
    """Acknowledge ``msg`` (or, with ``nak_delay``, ask for its redelivery after that many
    seconds); with ``confirm``, wait until the server confirms, retrying through a leader
    change.

    Returns True once sent (without ``confirm``) or confirmed; False if ``give_up_after``
    seconds passed, or the connection closed, first (the message is then redelivered when its
    lease runs out, which is safe: every effect is deduplicated).
    """
    if not msg.reply:
        return False
    payload = b"+ACK"
    if nak_delay is not None:
        payload = b"-NAK"
        if nak_delay > 0:
            payload += b" " + json.dumps({"delay": int(nak_delay * 1e9)}).encode()
    if not confirm:
        try:
            await msg._client.publish(msg.reply, payload)
        except nats.errors.Error:
            return False
        msg._ackd = True
        return True
    attempts = 0

    async def send() -> None:
        nonlocal attempts
        attempts += 1
        await request(msg._client, msg.reply, payload, timeout=timeout)

    try:
        await retry_transient(
            send, budget=give_up_after, first_delay=0.1, retrying=_SETTLE_RETRYABLE
        )
    except _SETTLE_RETRYABLE as exc:
        log.warning("ack.not_confirmed", subject=msg.subject, error=repr(exc), attempts=attempts)
        return False
    except nats.errors.ConnectionClosedError:
        return False
    msg._ackd = True
    return True


class WorkMessage:
    """A message taken from a work-stream consumer: what the runtime sees of a delivery.

    It carries the stream subject, body and headers, how often it has been delivered and its
    stream sequence, and is settled (acknowledged, or handed back after a delay) through the
    connection it came on.
    """

    __slots__ = ("data", "headers", "msg", "subject")

    def __init__(self, msg: Msg) -> None:
        self.msg = msg
        """The nats-py message (for brokers' own use)."""
        self.subject: str = msg.subject
        self.data: bytes = msg.data
        self.headers: dict[str, str] = msg.headers or {}

    @property
    def num_delivered(self) -> int:
        """1 on the first delivery, 2 on the first redelivery, ..."""
        return int(self.msg.metadata.num_delivered or 1)

    @property
    def stream_seq(self) -> int:
        """The message's sequence in its stream."""
        return int(self.msg.metadata.sequence.stream)

    @property
    def stored_at(self) -> datetime:
        """When the message was stored in its stream (UTC)."""
        return self.msg.metadata.timestamp

    async def settle(self, *, nak_delay: float | None = None, confirm: bool = True) -> bool:
        """Acknowledge it (or, with ``nak_delay``, ask for it again after that many seconds);
        see ``settle``."""
        return await settle(self.msg, nak_delay=nak_delay, confirm=confirm)

    async def in_progress(self) -> None:
        """Extend its lease (the consumer's ``ack_wait``) from now."""
        await self.msg.in_progress()


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
        retry_delay: float = 0.5,
    ) -> None:
        self._nc = nc
        self._subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._capacity = capacity
        # Pull in quarters of the capacity, not a request per finished message: each request
        # costs the server (and us) as much as a batch of messages.
        self._min_request = max(1, capacity // 4)
        self._in_hand = 0  # delivered to the caller and not yet released
        self._requests: dict[str, int] = {}  # open pull request token -> messages still due
        self._tokens = itertools.count()
        self._expires = expires
        self._heartbeat = heartbeat
        self._retry_delay = retry_delay
        self._inbox = nc.new_inbox()
        self._queue: asyncio.Queue[WorkMessage] = asyncio.Queue()
        self._sub: Subscription | None = None
        self._last_heard = time.monotonic()
        self._retry_at = 0.0  # after a 503, no new request before this time
        self._stopped = False
        self._timers: set[asyncio.Task[None]] = set()

    @property
    def _outstanding(self) -> int:
        """Messages requested from the server and neither delivered nor given up."""
        return sum(self._requests.values())

    async def start(self) -> None:
        """Subscribe to the delivery inbox and request the first messages."""
        self._sub = await self._nc.subscribe(f"{self._inbox}.*", cb=self._on_msg)
        await self._request_more()

    async def stop(self) -> None:
        """Stop receiving (outstanding requests expire on the server by themselves)."""
        self._stopped = True
        for timer in self._timers:
            timer.cancel()
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def _on_msg(self, msg: Msg) -> None:
        self._last_heard = time.monotonic()
        headers = msg.headers or {}
        status = headers.get("Status")
        if not status:
            # A message carries its stream subject, not the request's inbox; the server serves
            # waiting requests in the order they came, so it counts against the oldest one.
            oldest = next(iter(self._requests), None)
            if oldest is not None:
                left = self._requests[oldest] - 1
                if left > 0:
                    self._requests[oldest] = left
                else:
                    del self._requests[oldest]
            self._in_hand += 1
            self._queue.put_nowait(WorkMessage(msg))
            return
        if status == "100":  # idle heartbeat: the request is alive
            return
        # 408 (expired), 409 (leadership change, limits), 404: that request is over.
        self._requests.pop(msg.subject.rsplit(".", 1)[-1], None)
        if status == "503":
            # No responders: the consumer has no leader at the moment. Ask again shortly.
            self._retry_at = time.monotonic() + self._retry_delay
            self._request_later(self._retry_delay)
            return
        await self._request_more()

    def _request_later(self, delay: float) -> None:
        async def later() -> None:
            await asyncio.sleep(delay)
            await self._request_more()

        timer = asyncio.get_running_loop().create_task(later())
        self._timers.add(timer)
        timer.add_done_callback(self._timers.discard)

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
        if time.monotonic() < self._retry_at:
            return
        token = str(next(self._tokens))
        request = {
            "batch": want,
            "expires": int(self._expires * 1e9),
            "idle_heartbeat": int(self._heartbeat * 1e9),
        }
        self._requests[token] = want
        try:
            await self._nc.publish(
                self._subject, json.dumps(request).encode(), f"{self._inbox}.{token}"
            )
        except Exception:
            self._requests.pop(token, None)  # not sent (disconnected): ask again later

    def release(self, count: int = 1) -> None:
        """The caller finished ``count`` messages: room for as many new ones."""
        self._in_hand = max(0, self._in_hand - count)
        if self._wanted():
            asyncio.get_running_loop().create_task(self._request_more())

    def _check_alive(self) -> None:
        """Forget requests the server no longer serves: two heartbeats went by unheard."""
        if self._requests and time.monotonic() - self._last_heard > 2 * self._heartbeat:
            self._requests.clear()
            self._last_heard = time.monotonic()

    async def next_batch(self, max_batch: int, timeout: float = 1.0) -> list[WorkMessage]:
        """Wait up to ``timeout`` for a message, then take whatever else is already here."""
        try:
            first = await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            self._check_alive()
            await self._request_more()
            return []
        batch = [first]
        while len(batch) < max_batch and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        return batch
