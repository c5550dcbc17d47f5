"""Group commit: appends of different instances written together in one atomic batch.

An atomic batch (ADR-50) costs the server about the same whatever its size, so a worker that
commits each workflow task in a batch of its own is capped by batches per second, not by
messages. ``GroupCommitter`` queues the appends that callers hand it and writes whatever has
queued up while earlier batches were in flight as one batch: each instance's first message
carries that instance's own ``Nats-Expected-Last-Subject-Sequence``, so optimistic concurrency
still holds per instance. A conflict rejects the whole batch; the committer finds out which
instances lost (by re-reading their last sequences), fails only those, and writes the others
again. Each caller gets the stream sequence of its own last history event back.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import nats.errors
from nats.aio.client import Client as NATS
from nats.errors import MaxPayloadError

from brokers._errors import (
    ERR_BATCH_INCOMPLETE,
    AppendConflictError,
    UnavailableError,
    append_error,
)

MAX_GROUP_MESSAGES = 1000
"""Messages in one atomic batch (the server's default batch size limit)."""
MAX_GROUP_BYTES = 4 * 1024 * 1024
"""Bytes of payload in one atomic batch."""
MAX_GROUPS_IN_FLIGHT = 2
"""Batches a connection has in flight: one being stored while the next one fills up. A stream
takes at most 50 batches in flight from all its writers (ADR-50), so several workers can share
one."""
_HEADER_ALLOWANCE = 256  # bytes counted per message for its headers


class BatchMessage(Protocol):
    """What the committer writes: a subject, a body and headers."""

    subject: str
    data: bytes
    headers: dict[str, str]


@dataclass(eq=False)
class _Pending:
    """One caller's append, waiting to be written."""

    subject: str
    expected_last_seq: int
    messages: Sequence[BatchMessage]
    event_count: int
    future: asyncio.Future[int]
    size: int = 0
    solo: bool = False
    """Write in a batch of its own (a shared batch was refused for a reason not pinned down)."""


class GroupCommitter:
    """Writes queued appends of different instances together, at most a few batches at a time.

    A batch the stream could not take (its batch slots full, no leader at the moment) stored
    nothing, so it is sent again after a short back-off; a timeout is not retried here, as it
    may hide a commit: the caller reads the history again.

    Args:
        nc: the connection to publish on.
        last_seq_of: reads a history subject's last stream sequence (0: none); used to find
            the instances that lost a conflict.
    """

    def __init__(
        self,
        nc: NATS,
        last_seq_of: Callable[[str], Awaitable[int]],
        *,
        max_in_flight: int = MAX_GROUPS_IN_FLIGHT,
        max_messages: int = MAX_GROUP_MESSAGES,
        max_bytes: int = MAX_GROUP_BYTES,
    ) -> None:
        self._nc = nc
        self._last_seq_of = last_seq_of
        self._max_in_flight = max_in_flight
        self._max_messages = max_messages
        self._max_bytes = max_bytes
        self._queue: deque[_Pending] = deque()
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def append(
        self, subject: str, expected_last_seq: int, messages: Sequence[BatchMessage],
        event_count: int,
    ) -> int:
        """Queue ``messages`` (history events on ``subject`` first) and wait until written.

        Returns:
            The stream sequence of the last of the ``event_count`` history events.
        """
        sizes = [len(m.data) for m in messages]
        # Refused here, not halfway through a shared batch, so that only this caller hears it.
        if max(sizes) > self._nc.max_payload:
            raise MaxPayloadError
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        size = sum(sizes) + _HEADER_ALLOWANCE * len(sizes)
        self._queue.append(
            _Pending(subject, expected_last_seq, messages, event_count, future, size)
        )
        self._start_groups()
        return await future

    # ------------------------------------------------------------------ scheduling

    def _start_groups(self) -> None:
        while self._in_flight < self._max_in_flight and self._queue:
            group = self._take_group()
            if not group:
                return
            self._in_flight += 1
            task = asyncio.get_running_loop().create_task(self._commit(group))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _take_group(self) -> list[_Pending]:
        """The next batch: queued appends in order, one per subject, within the size limits."""
        group: list[_Pending] = []
        subjects: set[str] = set()
        messages = size = 0
        kept: deque[_Pending] = deque()
        while self._queue:
            pending = self._queue.popleft()
            if pending.future.done():  # the caller gave up before it was written
                continue
            # An append larger than the limits on its own still goes, alone.
            fits = not group or (
                pending.subject not in subjects
                and messages + len(pending.messages) <= self._max_messages
                and size + pending.size <= self._max_bytes
                and not pending.solo
            )
            if not fits:
                kept.append(pending)
                if messages >= self._max_messages or size >= self._max_bytes:
                    break
                continue
            group.append(pending)
            subjects.add(pending.subject)
            messages += len(pending.messages)
            size += pending.size
            if pending.solo:
                break
        kept.extend(self._queue)
        self._queue = kept
        return group

    # ------------------------------------------------------------------- writing

    async def _commit(self, group: list[_Pending]) -> None:
        try:
            await self._write(group)
        except BaseException as exc:  # the connection failed: every caller of the batch hears it
            for pending in group:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            self._in_flight -= 1
            self._start_groups()

    async def _write(self, group: list[_Pending]) -> None:
        unavailable = 0
        for attempt in range(20):
            try:
                ack = json.loads(await self._send(group))
                error = ack.get("error")
                if not error:
                    self._resolve(group, int(ack["seq"]))
                    return
            except nats.errors.NoRespondersError:
                error = {"code": 503, "description": "no stream leader answered the batch"}
            code = int(error.get("err_code", 0) or 0)
            if code == ERR_BATCH_INCOMPLETE and attempt < 19:
                # Other writers filled the stream's batch slots: nothing was stored, try again.
                await asyncio.sleep(0.005 * (attempt + 1) * (1 + random.random()))
                continue
            exc = append_error(error)
            if isinstance(exc, UnavailableError) and unavailable < 6 and attempt < 19:
                # No stream leader right now, or a new one still catching up: nothing was
                # stored (unlike a timeout, which may hide a commit), so try again shortly.
                unavailable += 1
                await asyncio.sleep(0.1 * 2 ** (unavailable - 1) * (1 + random.random() / 2))
                continue
            if len(group) == 1:
                self._fail(group[0], exc)
                return
            if isinstance(exc, AppendConflictError):
                losers = await self._losers(group)
                if losers:
                    for pending in losers:
                        self._fail(pending, AppendConflictError(str(exc)))
                    self._requeue([p for p in group if p not in losers])
                    return
            # Refused for a reason no single instance is known to cause: write each alone, so
            # each caller gets its own answer.
            for pending in group:
                pending.solo = True
            self._requeue(group)
            return
        raise AssertionError("unreachable")

    async def _send(self, group: list[_Pending]) -> bytes:
        """Publish the group as one batch (a lone message as a plain publish); the commit's
        reply."""
        if len(group) == 1 and len(group[0].messages) == 1:
            only, pending = group[0].messages[0], group[0]
            headers = {
                **only.headers,
                "Nats-Expected-Last-Subject-Sequence": str(pending.expected_last_seq),
            }
            reply = await self._nc.request(only.subject, only.data, headers=headers, timeout=10)
            return reply.data
        batch_id = uuid.uuid4().hex
        last = sum(len(p.messages) for p in group)
        n = 0
        for pending in group:
            for index, message in enumerate(pending.messages):
                n += 1
                headers = {
                    **message.headers,
                    "Nats-Batch-Id": batch_id,
                    "Nats-Batch-Sequence": str(n),
                }
                if index == 0:
                    headers["Nats-Expected-Last-Subject-Sequence"] = str(
                        pending.expected_last_seq
                    )
                if n == last:
                    headers["Nats-Batch-Commit"] = "1"
                    reply = await self._nc.request(
                        message.subject, message.data, headers=headers, timeout=10
                    )
                    return reply.data
                await self._nc.publish(message.subject, message.data, headers=headers)
        raise AssertionError("unreachable")

    def _resolve(self, group: list[_Pending], last_seq: int) -> None:
        """Hand each caller the sequence of its last history event (a batch is contiguous)."""
        seq = last_seq - sum(len(p.messages) for p in group)
        for pending in group:
            if not pending.future.done():
                pending.future.set_result(seq + pending.event_count)
            seq += len(pending.messages)

    @staticmethod
    def _fail(pending: _Pending, exc: Exception) -> None:
        if not pending.future.done():
            pending.future.set_exception(exc)

    async def _losers(self, group: list[_Pending]) -> list[_Pending]:
        """The appends whose history moved past the sequence they expected."""
        current = await asyncio.gather(*(self._last_seq_of(p.subject) for p in group))
        return [p for p, seq in zip(group, current, strict=True) if seq != p.expected_last_seq]

    def _requeue(self, group: list[_Pending]) -> None:
        """Put appends back at the head of the queue, in their order."""
        self._queue.extendleft(reversed(group))


async def publish_expecting(nc: NATS, subject: str, data: bytes, expected_last_seq: int) -> int:
    """Publish one message only if ``subject``'s last stream sequence is ``expected_last_seq``;
    its stream sequence.

    Refusals that store nothing (no stream leader yet, a new leader catching up) are asked
    again with a back-off; a timeout is not, as it may hide a write: the caller reads the
    history again.

    Raises:
        AppendConflictError: the subject moved past ``expected_last_seq``.
        UnavailableError: no leader took the message within a few seconds.
    """
    headers = {"Nats-Expected-Last-Subject-Sequence": str(expected_last_seq)}
    unavailable = 0
    while True:
        try:
            reply = await nc.request(subject, data, headers=headers, timeout=10)
            ack = json.loads(reply.data)
            error = ack.get("error")
            if not error:
                return int(ack["seq"])
        except nats.errors.NoRespondersError:
            error = {"code": 503, "description": "no stream leader answered the append"}
        exc = append_error(error)
        if isinstance(exc, UnavailableError) and unavailable < 6:
            unavailable += 1
            await asyncio.sleep(0.1 * 2 ** (unavailable - 1) * (1 + random.random() / 2))
            continue
        raise exc
