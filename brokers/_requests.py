"""Request-reply on the hot paths: one reply subscription per connection, a future per request.

Every step of a workflow waits for at least one reply: a publish acknowledgement, a
compare-and-set of the instance's record, a confirmed ack of a work message, a stream message
get. nats-py's ``Client.request`` spends more of a worker's CPU on each of them than the
message itself costs: a NUID, a task for ``asyncio.wait_for`` and its cancellation handling
per call. ``request`` keeps what matters (one wildcard reply subscription per connection, as
nats-py's own multiplexer does) and drops the rest: a counter for the reply token and a timer
handle for the timeout. Measured on the two-core machine of docs/performance.md, an
acknowledged JetStream publish costs the publisher about half the CPU of ``js.publish``.

Errors are nats-py's own, so callers and ``TRANSIENT_ERRORS`` treat them as before: no
responders (status 503) raises ``nats.errors.NoRespondersError``, no reply in time
``nats.errors.TimeoutError``, a publish on a closed connection
``nats.errors.ConnectionClosedError``. ``publish_acked`` raises what ``js.publish`` raises.
A waiter's cancellation is never lost (Python 3.11's ``wait_for`` can drop one).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import weakref
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

__all__ = ["publish_acked", "request"]

_NO_RESPONDERS = "503"


class _Requests:
    """The requests of one connection."""

    def __init__(self, nc: NATS) -> None:
        self._nc = nc
        self._prefix = nc.new_inbox()
        self._skip = len(self._prefix) + 1
        self._tokens = itertools.count()
        self._pending: dict[str, asyncio.Future[Msg]] = {}
        self._sub: Subscription | None = None
        self._subscribing = asyncio.Lock()

    async def _subscribe(self) -> None:
        async with self._subscribing:
            if self._sub is None:
                self._sub = await self._nc.subscribe(
                    f"{self._prefix}.*", cb=self._on_reply, pending_msgs_limit=0,
                    pending_bytes_limit=0,
                )

    async def _on_reply(self, msg: Msg) -> None:
        future = self._pending.pop(msg.subject[self._skip:], None)
        if future is None or future.done():
            return  # its caller gave up (timeout, cancellation)
        headers = msg.headers
        if headers and headers.get("Status") == _NO_RESPONDERS:
            future.set_exception(nats.errors.NoRespondersError())
        else:
            future.set_result(msg)

    async def request(
        self, subject: str, data: bytes, headers: dict[str, str] | None, timeout: float
    ) -> Msg:
        if self._sub is None:
            await self._subscribe()
        token = str(next(self._tokens))
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Msg] = loop.create_future()
        self._pending[token] = future
        timer = loop.call_later(timeout, _expire, future)
        try:
            await self._nc.publish(
                subject, data, reply=f"{self._prefix}.{token}", headers=headers
            )
            return await future
        finally:
            timer.cancel()
            self._pending.pop(token, None)


def _expire(future: asyncio.Future[Msg]) -> None:
    if not future.done():
        future.set_exception(nats.errors.TimeoutError())


_by_connection: weakref.WeakKeyDictionary[NATS, _Requests] = weakref.WeakKeyDictionary()


async def request(
    nc: NATS,
    subject: str,
    data: bytes = b"",
    *,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> Msg:
    """Send ``data`` to ``subject`` on ``nc`` and return the reply, like ``nc.request``.

    Raises:
        nats.errors.NoRespondersError: nobody listens on ``subject``.
        nats.errors.TimeoutError: no reply within ``timeout`` seconds.
        nats.errors.ConnectionClosedError: ``nc`` is closed.
    """
    requests = _by_connection.get(nc)
    if requests is None:
        requests = _by_connection[nc] = _Requests(nc)
    return await requests.request(subject, data, headers, timeout)


async def publish_acked(
    nc: NATS,
    subject: str,
    data: bytes,
    *,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """Publish to a stream and return its acknowledgement (``stream``, ``seq``, and
    ``duplicate`` when the server dropped a copy), like ``js.publish``.

    Raises:
        nats.js.errors.NoStreamResponseError: no stream takes ``subject`` (or none answers).
        nats.js.errors.APIError: the stream refused the message (its ``err_code`` says why).
        nats.errors.TimeoutError: no acknowledgement within ``timeout`` seconds.
    """
    try:
        reply = await request(nc, subject, data, headers=headers, timeout=timeout)
    except nats.errors.NoRespondersError:
        raise nats.js.errors.NoStreamResponseError from None
    ack: dict[str, Any] = json.loads(reply.data)
    error = ack.get("error")
    if error:
        raise nats.js.errors.APIError.from_error(error)
    return ack
