"""Instance histories on ``<p>.history.<id>``: one message per workflow task, guarded by the
subject's last sequence; read back with batch direct gets (ADR-31).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import nats
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from brokers._commit import MAX_BATCH_MESSAGES, append_batch, publish_expecting
from brokers._errors import (
    JetStreamError,
    UnavailableError,
    api_error,
    retry_transient,
)
from brokers._requests import publish_acked, request
from brokers._subjects import DispatchMessage
from brokers._topology import READ_TIMEOUT, BrokerBase


@dataclass
class _DirectGetReply:
    """The messages of one batch direct get, as they arrive."""

    subject: str
    size: int
    done: asyncio.Future[tuple[list[StoredEvent], bool]]
    events: list[StoredEvent] = field(default_factory=list)


@dataclass
class StoredEvent:
    """A history message as stored: its stream sequence and raw JSON."""

    seq: int
    data: bytes


class HistoryStore(BrokerBase):
    """Instance histories: appending task commits, reading them back, compacting, purging."""

    _direct_inbox: str
    _direct_sub: Subscription | None
    _direct_token: int
    _direct_waiting: dict[str, _DirectGetReply]
    outbox_ttl: str


    async def append(
        self,
        instance_id: str,
        expected_last_seq: int,
        events: Sequence[bytes],
        dispatches: Sequence[DispatchMessage] = (),
    ) -> int:
        """Append history events and their dispatches atomically: one atomic batch (ADR-50),
        stored only if the instance's last history sequence is still ``expected_last_seq`` (0:
        no history yet).

        Returns:
            The stream sequence of the last appended history event.

        Raises:
            ValueError: more messages than one atomic batch takes.
            MaxPayloadError: a message is over the server's max payload; nothing was stored.
            AppendConflictError: another writer advanced the history first, or a dispatch's
                message id is already stored.
            UnavailableError: the stream had no (ready) leader for several seconds; nothing was
                stored.
        """
        subject = self.subjects.history(instance_id)
        messages: list[DispatchMessage] = [
            DispatchMessage(subject, data) for data in events
        ] + list(dispatches)
        if not messages:
            return expected_last_seq
        if len(messages) > MAX_BATCH_MESSAGES:
            raise ValueError(
                f"a workflow task of {instance_id!r} produced {len(messages)} messages; "
                f"at most {MAX_BATCH_MESSAGES} fit one atomic append: split the fan-out"
            )
        # The batch is stored contiguously, history events first: count back past the
        # dispatches to the last event.
        last_seq = await append_batch(self.nc, expected_last_seq, messages)
        return last_seq - len(dispatches)

    async def commit(
        self, instance_id: str, expected_last_seq: int, messages: Sequence[bytes]
    ) -> int:
        """Append one workflow task's history messages, only if the instance's last history
        sequence is still ``expected_last_seq`` (0: no history yet).

        A task is one message (all its events), written as a plain publish with
        ``Nats-Expected-Last-Subject-Sequence``: one message is stored whole or not at all. A
        task too large for one message comes as several, written as one atomic batch.

        Returns:
            The stream sequence of the last message written.

        Raises:
            AppendConflictError: another writer advanced the history first.
            UnavailableError: the stream had no (ready) leader for several seconds; nothing was
                stored.
        """
        if len(messages) != 1:
            return await self.append(instance_id, expected_last_seq, messages)
        subject = self.subjects.history(instance_id)
        if len(messages[0]) > self.nc.max_payload:
            raise nats.errors.MaxPayloadError
        return await publish_expecting(self.nc, subject, messages[0], expected_last_seq)

    async def send_dispatches(self, dispatches: Sequence[DispatchMessage]) -> None:
        """Publish a committed task's dispatches, all at once, each acknowledged.

        Every dispatch carries a deterministic ``Nats-Msg-Id`` (timer schedules replace their
        subject's schedule), so sending them again, after a crash or a lost acknowledgement,
        stores nothing twice.
        """

        async def send(message: DispatchMessage) -> None:
            async def once() -> None:
                await publish_acked(
                    self.nc, message.subject, message.data, headers=message.headers or None
                )

            await retry_transient(once)

        if len(dispatches) == 1:
            await send(dispatches[0])
        elif dispatches:
            await asyncio.gather(*(send(message) for message in dispatches))

    async def load_history(self, instance_id: str, after_seq: int = 0) -> list[StoredEvent]:
        """An instance's history messages after ``after_seq``, by batch direct get (ADR-31);
        asked again for a few seconds while a leader is being elected."""
        return await retry_transient(lambda: self._load_history(instance_id, after_seq))

    async def _load_history(self, instance_id: str, after_seq: int) -> list[StoredEvent]:
        subject = self.subjects.history(instance_id)
        try:
            return await self._load_direct(subject, after_seq)
        except UnavailableError:
            # No replica answers direct gets right now (fail-over): ask the stream leader.
            return await self._load_from_leader(subject, after_seq)

    async def _load_direct(self, subject: str, after_seq: int) -> list[StoredEvent]:
        stored: list[StoredEvent] = []
        next_seq = after_seq + 1
        while True:
            batch, more = await self._direct_get_batch(subject, next_seq, 1000)
            stored.extend(batch)
            if not more or not batch:
                return stored
            next_seq = batch[-1].seq + 1

    async def _load_from_leader(self, subject: str, after_seq: int) -> list[StoredEvent]:
        stored: list[StoredEvent] = []
        next_seq = after_seq + 1
        stream = self.subjects.history_stream
        while True:
            reply = await self._api(
                f"STREAM.MSG.GET.{stream}", {"seq": next_seq, "next_by_subj": subject},
                allow_error=True, timeout=READ_TIMEOUT,
            )
            error = reply.get("error")
            if error:
                if error.get("code") == 404:
                    return stored
                raise api_error(error)
            message = reply["message"]
            seq = int(message["seq"])
            stored.append(StoredEvent(seq, base64.b64decode(message.get("data", ""))))
            next_seq = seq + 1

    async def _direct_get_batch(
        self, subject: str, from_seq: int, size: int
    ) -> tuple[list[StoredEvent], bool]:
        """One batch direct get; the replies arrive on this broker's own reply subscription
        (a subscription per read would cost a subscribe, an unsubscribe and a waiting task
        per message)."""
        if self._direct_sub is None:
            sub = await self.nc.subscribe(f"{self._direct_inbox}.*", cb=self._on_direct_reply)
            if self._direct_sub is None:
                self._direct_sub = sub
            else:
                await sub.unsubscribe()
        self._direct_token += 1
        token = str(self._direct_token)
        reply = _DirectGetReply(subject, size, asyncio.get_running_loop().create_future())
        self._direct_waiting[token] = reply
        try:
            request = {"seq": from_seq, "next_by_subj": subject, "batch": size}
            await self.nc.publish(
                f"$JS.API.DIRECT.GET.{self.subjects.history_stream}",
                json.dumps(request).encode(),
                reply=f"{self._direct_inbox}.{token}",
            )
            return await asyncio.wait_for(reply.done, READ_TIMEOUT)
        finally:
            self._direct_waiting.pop(token, None)

    async def _on_direct_reply(self, msg: Msg) -> None:
        reply = self._direct_waiting.get(msg.subject.rsplit(".", 1)[-1])
        if reply is None or reply.done.done():
            return  # the reader gave up (timed out)
        headers = msg.headers or {}
        status = headers.get("Status")
        if not status:
            reply.events.append(StoredEvent(int(headers["Nats-Sequence"]), msg.data))
        elif status == "404":
            reply.done.set_result((reply.events, False))
        elif status == "204":  # end of batch
            more = int(headers.get("Nats-Num-Pending", "0") or 0) > 0
            reply.done.set_result((reply.events, more and len(reply.events) >= reply.size))
        elif status == "503":
            reply.done.set_exception(
                UnavailableError(f"direct get of {reply.subject} found no responders")
            )
        else:
            reply.done.set_exception(
                JetStreamError(int(status), headers.get("Description", "direct get"))
            )

    async def last_history_seq(self, instance_id: str) -> tuple[int, bytes | None]:
        """The sequence and body of an instance's last history message ((0, None): none);
        asked again for a few seconds while a leader is being elected."""
        subject = self.subjects.history(instance_id)
        return await retry_transient(lambda: self._last_message_on(subject))

    async def _last_message_on(self, subject: str) -> tuple[int, bytes | None]:
        try:
            msg = await request(
                self.nc, f"$JS.API.DIRECT.GET.{self.subjects.history_stream}",
                json.dumps({"last_by_subj": subject}).encode(),
                timeout=READ_TIMEOUT,
            )
        except nats.errors.NoRespondersError:
            raise
        headers = msg.headers or {}
        if headers.get("Status") == "404":
            return 0, None
        if headers.get("Status") == "503":
            raise UnavailableError(f"direct get of {subject} found no responders")
        if headers.get("Status"):
            raise JetStreamError(int(headers["Status"]), headers.get("Description", ""))
        return int(headers["Nats-Sequence"]), msg.data

    async def compact_history(self, instance_id: str, keep_from_seq: int) -> None:
        """Drop an instance's history before ``keep_from_seq`` (older runs)."""
        await self._api(
            f"STREAM.PURGE.{self.subjects.history_stream}",
            {"filter": self.subjects.history(instance_id), "seq": keep_from_seq},
        )

    async def purge_instance(self, instance_id: str) -> None:
        """Remove an instance's history, pending timers (its retention schedule among them),
        the copies of work sent to it and of requests to stop its activities, and its record.

        The record's purge leaves a marker (so that watchers see the instance go), which
        expires after ``PURGE_MARKER_TTL`` (``purge_key``).
        """
        s = self.subjects
        for subject in (
            s.history(instance_id),
            f"{s.prefix}.timer.{instance_id}.>",
            s.outbox_workflow(instance_id),
            s.cancel(instance_id),
        ):
            await self._api(f"STREAM.PURGE.{s.history_stream}", {"filter": subject})
        await self.purge_key(await self.instances(), instance_id)
