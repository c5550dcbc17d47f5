"""Guarded appends: writes that store only if a subject's last stream sequence is the one the
writer read (``Nats-Expected-Last-Subject-Sequence``), so two writers never both advance one
instance's history.

A workflow task is one message (``publish_expecting``). Where one message cannot hold what
must be stored together, the messages are written as one atomic batch (ADR-50,
``append_batch``): all stored or none. That is a task too large for the server's max payload
(several task commits), a client's start due later (its ``execution_started`` and its timer
schedule) and a client's rerun (the copied history and its dispatches). Both share one back-off
loop (``_write_guarded``) for refusals that stored nothing.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import Awaitable, Callable, Sequence

import nats.errors
from nats.aio.client import Client as NATS
from nats.errors import MaxPayloadError

from brokers._errors import ERR_BATCH_INCOMPLETE, UnavailableError, append_error
from brokers._requests import request
from brokers._subjects import DispatchMessage

MAX_BATCH_MESSAGES = 1000
"""Messages in one atomic batch (the server's default batch size limit)."""
_MAX_ATTEMPTS = 20
"""Writes of one append, at most (refusals that stored nothing are asked again)."""
_MAX_UNAVAILABLE = 6
"""Of those, retries while no stream leader answers (about 6 s of back-off in all)."""
_EXPECTED_LAST_SEQ = "Nats-Expected-Last-Subject-Sequence"


async def publish_expecting(nc: NATS, subject: str, data: bytes, expected_last_seq: int) -> int:
    """Publish one message only if ``subject``'s last stream sequence is ``expected_last_seq``;
    its stream sequence.

    Raises:
        AppendConflictError: the subject moved past ``expected_last_seq``.
        UnavailableError: no leader took the message within a few seconds.
    """
    headers = {_EXPECTED_LAST_SEQ: str(expected_last_seq)}

    async def send() -> bytes:
        return (await request(nc, subject, data, headers=headers, timeout=10)).data

    return await _write_guarded(send, "append")


async def append_batch(
    nc: NATS, expected_last_seq: int, messages: Sequence[DispatchMessage]
) -> int:
    """Write ``messages`` as one atomic batch, only if the first message's subject (the
    instance's history) still has ``expected_last_seq`` as its last stream sequence (0: none);
    the stream sequence of the batch's last message.

    A batch is stored contiguously, so the caller can count back from the returned sequence.

    Raises:
        ValueError: no messages.
        MaxPayloadError: a message is over the server's max payload (nothing was sent).
        AppendConflictError: the history moved past ``expected_last_seq``, or a message id in
            the batch is already stored (10201): read the history again before retrying.
        UnavailableError: no leader took the batch within a few seconds.
    """
    if not messages:
        raise ValueError("an atomic batch needs at least one message")
    # Refused before any of the batch is sent, so no half-sent batch holds one of the stream's
    # batch slots until the server abandons it.
    if any(len(m.data) > nc.max_payload for m in messages):
        raise MaxPayloadError

    async def send() -> bytes:
        return await _send_batch(nc, expected_last_seq, messages)

    return await _write_guarded(send, "batch")


async def _send_batch(
    nc: NATS, expected_last_seq: int, messages: Sequence[DispatchMessage]
) -> bytes:
    """Publish ``messages`` as one batch, the guard on the first; the commit's reply."""
    batch_id = uuid.uuid4().hex
    last = len(messages)
    for n, message in enumerate(messages, start=1):
        headers = {**message.headers, "Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(n)}
        if n == 1:
            headers[_EXPECTED_LAST_SEQ] = str(expected_last_seq)
        if n == last:
            headers["Nats-Batch-Commit"] = "1"
            reply = await request(
                nc, message.subject, message.data, headers=headers, timeout=10
            )
            return reply.data
        await nc.publish(message.subject, message.data, headers=headers)
    raise AssertionError("unreachable: the last message is sent as a request")


async def _write_guarded(send: Callable[[], Awaitable[bytes]], what: str) -> int:
    """``await send()`` until its publish ack has no error; the acked stream sequence.

    Refusals that stored nothing are asked again: a stream whose batch slots other writers
    filled (10176) at once, no stream leader (or a new one still catching up) after a growing
    back-off. A timeout is not, as it may hide a write (a lost commit ack): it propagates, and
    the caller reads the history again before retrying.

    Raises:
        AppendConflictError: the history moved, or a message id is already stored.
        UnavailableError: no leader answered within ``_MAX_UNAVAILABLE`` back-offs.
    """
    unavailable = 0
    for attempt in range(1, _MAX_ATTEMPTS + 1):
        try:
            ack = json.loads(await send())
            error = ack.get("error")
            if not error:
                return int(ack["seq"])
        except nats.errors.NoRespondersError:
            error = {"code": 503, "description": f"no stream leader answered the {what}"}
        retries_left = attempt < _MAX_ATTEMPTS
        if int(error.get("err_code", 0) or 0) == ERR_BATCH_INCOMPLETE and retries_left:
            # Other writers filled the stream's batch slots: nothing was stored, try again.
            await asyncio.sleep(0.005 * attempt * (1 + random.random()))
            continue
        exc = append_error(error)
        if isinstance(exc, UnavailableError) and unavailable < _MAX_UNAVAILABLE and retries_left:
            # No stream leader right now, or a new one still catching up: nothing was stored.
            unavailable += 1
            await asyncio.sleep(0.1 * 2 ** (unavailable - 1) * (1 + random.random() / 2))
            continue
        raise exc
    raise AssertionError("unreachable: the last attempt raises or returns")
