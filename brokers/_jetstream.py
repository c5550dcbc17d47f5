"""JetStream topology and operations used by the runtime and the client.

Topology (``<p>`` is the prefix, ``jetloom`` by default; ``<P>`` the same in upper case):

- ``<P>_HISTORY`` (limits, file): ``<p>.history.<instance>`` history events;
  ``<p>.outbox.>`` dispatches written in the same atomic batch as the history they belong to
  (per-message TTL, they are copies in transit); ``<p>.timer.<instance>.<id>`` message
  schedules (ADR-51) whose target is ``<p>.outbox.workflow.<instance>``.
- ``<P>_WORK`` (work queue, file): ``<p>.start.<workflow>`` public start events,
  ``<p>.inbox.<instance>`` events sent to an instance, and, sourced from the history stream,
  ``<p>.outbox.activity.<queue>`` and ``<p>.outbox.workflow.<instance>`` (renamed to
  ``<p>.inbox.<instance>`` on the way). Instances of a named application have
  ``<p>.app.<app>.start.<workflow>`` and ``<p>.app.<app>.inbox.<instance>`` instead (work
  written with history: ``<p>.outbox.app.<app>.<instance>``, sourced by a second source).
  Durable pull consumers on it are shared by all workers.
- ``<P>_DEADLETTER`` (limits): ``<p>.deadletter.>`` messages that could not be used, with reason.
- ``<P>_HISTORY`` also holds ``<p>.cancel.<instance>`` requests to stop activities and
  ``<p>.schedule.<schedule>`` recurring schedules (targeting ``<p>.outbox.workflow.<schedule>``).
- KV bucket ``<p>_instances``: the status projection of each instance.
- KV bucket ``<p>_schedules``: what each recurring schedule starts (created on first use).
- Object Store bucket ``<p>_payloads``: payloads over the inline size threshold
  (``brokers._payload_store``).
"""

from __future__ import annotations

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from brokers._errors import retry_transient
from brokers._history import HistoryStore, _DirectGetReply
from brokers._payload_store import DEFAULT_THRESHOLD, PayloadStore
from brokers._pull import WorkMessage
from brokers._records import RecordStore
from brokers._requests import publish_acked
from brokers._signals import SignalStore
from brokers._subjects import Subjects

DEFAULT_OUTBOX_TTL = "24h"


class JetStreamBroker(HistoryStore, RecordStore, SignalStore):
    """Everything jetloom does on JetStream, over one connection."""

    def __init__(
        self,
        nc: NATS,
        subjects: Subjects,
        *,
        replicas: int = 1,
        large_payload_threshold: int = DEFAULT_THRESHOLD,
        outbox_ttl: str = DEFAULT_OUTBOX_TTL,
    ) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.subjects = subjects
        self.replicas = replicas
        self.payloads = PayloadStore(
            self.js, subjects.payloads_bucket, threshold=large_payload_threshold,
            replicas=replicas,
        )
        self._kv: KeyValue | None = None
        self._schedules_kv: KeyValue | None = None
        self.outbox_ttl = outbox_ttl
        """Per-message TTL (``Nats-TTL``) of the copies of dispatches in the history stream:
        they are in transit to the work stream, the history is the record."""
        self._direct_inbox = nc.new_inbox()
        self._direct_sub: Subscription | None = None
        self._direct_token = 0
        self._direct_waiting: dict[str, _DirectGetReply] = {}


    # ------------------------------------------------------------------ messages

    async def publish(
        self,
        subject: str,
        data: bytes,
        *,
        msg_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> int:
        """Publish to JetStream and wait for the ack.

        With ``msg_id`` the server deduplicates, so the publish is sent again for a few seconds
        while a leader is being elected.
        """
        hdrs = dict(headers or {})
        if not msg_id:
            return int((await publish_acked(self.nc, subject, data, headers=hdrs or None))["seq"])
        hdrs["Nats-Msg-Id"] = msg_id

        async def send() -> int:
            return int((await publish_acked(self.nc, subject, data, headers=hdrs))["seq"])

        return await retry_transient(send)

    async def dead_letter(self, kind: str, work: WorkMessage | Msg, reason: str) -> None:
        """Keep an unusable message on the dead-letter subject, with why."""
        msg = work.msg if isinstance(work, WorkMessage) else work
        headers = {
            "Jetloom-Reason": reason[:1000].replace("\r", " ").replace("\n", " "),
            "Jetloom-Original-Subject": msg.subject,
        }
        msg_id = None
        if msg.reply:  # a JetStream message: its stream sequence identifies it
            meta = msg.metadata
            msg_id = f"{meta.stream}:{meta.sequence.stream}:dead"
        data = msg.data
        limit = self.nc.max_payload - 8192  # room for the headers
        if len(data) > limit:
            headers["Jetloom-Truncated-From"] = str(len(data))
            data = data[:limit]
        await self.publish(self.subjects.deadletter(kind), data, headers=headers, msg_id=msg_id)
