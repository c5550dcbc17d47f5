"""JetStream topology and operations used by the runtime and the client.

Topology (``<p>`` is the prefix, ``jetloom`` by default; ``<P>`` the same in upper case):

- ``<P>_HISTORY`` (limits, file): ``<p>.history.<instance>`` history events;
  ``<p>.outbox.>`` dispatches written in the same atomic batch as the history they belong to
  (per-message TTL, they are copies in transit); ``<p>.timer.<instance>.<id>`` message
  schedules (ADR-51) whose target is ``<p>.outbox.workflow.<instance>``.
- ``<P>_WORK`` (work queue, file): ``<p>.start.<workflow>`` public start events,
  ``<p>.inbox.<instance>`` events sent to an instance, and, sourced from the history stream,
  ``<p>.outbox.activity.<queue>`` and ``<p>.outbox.workflow.<instance>`` (renamed to
  ``<p>.inbox.<instance>`` on the way). Durable pull consumers on it are shared by all workers.
- ``<P>_DEADLETTER`` (limits): ``<p>.deadletter.>`` messages that could not be used, with reason.
- KV bucket ``<p>_instances``: the status projection of each instance.
- Object Store bucket ``<p>_payloads``: payloads over the inline size threshold
  (``brokers._payload_store``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import os
import re
import ssl
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import nats
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from brokers._auth import describe_options, env_defaults
from brokers._commit import MAX_GROUP_MESSAGES, GroupCommitter, publish_expecting
from brokers._errors import (
    ERR_WRONG_LAST_SEQUENCE,
    ERR_WRONG_LAST_SEQUENCE_CONSTANT,
    TRANSIENT_ERRORS,
    JetStreamError,
    UnavailableError,
    api_error,
    retry_transient,
)
from brokers._payload_store import DEFAULT_THRESHOLD, PayloadStore
from brokers._pull import WorkMessage

_PREFIX = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")

MAX_BATCH = MAX_GROUP_MESSAGES
READ_TIMEOUT = 3.0
"""Seconds a read (direct get, message get) waits for its answer before it is asked again
(``retry_transient``): a healthy server answers in a millisecond; during a leader election
the request may have gone to a leader that is gone."""
SOURCE_START_TIMEOUT = 5.0
"""Seconds ``ensure_topology`` waits for a new work stream's source to start."""
RECORD_READ_BATCH = 1000
"""Instance records asked for at once by ``read_records``."""
RECORD_READ_WAIT = 5.0
"""Seconds ``read_records`` waits for a change before asking again."""
RECORD_READER_IDLE = 30.0
"""Seconds after which the server drops the consumer of a record reader that went away."""
RECORD_READER_RETRY_BUDGET = 20.0
"""Seconds a record reader keeps replacing a consumer that fails before it gives up."""


Connection = NATS
"""A connection to NATS (nats-py's client), as ``connect_nats`` returns it."""


def schedule_headers(fire_at: datetime, target: str, ttl: str | None = None) -> dict[str, str]:
    """Headers of a message schedule (ADR-51) that publishes its body to ``target`` once, at
    ``fire_at``; with ``ttl``, the fired message carries that per-message TTL."""
    headers = {
        "Nats-Schedule": "@at " + fire_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "Nats-Schedule-Target": target,
    }
    if ttl is not None:
        headers["Nats-Schedule-TTL"] = ttl
    return headers


def kept_replicas(current: int | None, requested: int) -> int:
    """The replicas an existing stream keeps when a runtime asks for ``requested``: the larger.

    Replicas are only ever raised by ``ensure_topology``, never lowered (see docs/cluster.md).
    """
    return max(int(current or 1), requested)


DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
DEFAULT_PREFIX = "jetloom"


def nats_url(url: str | None = None) -> str:
    """``url``, else NATS_URL, else ``nats://127.0.0.1:4222``."""
    return url or os.environ.get("NATS_URL") or DEFAULT_NATS_URL


def prefix_or_default(prefix: str | None = None) -> str:
    """``prefix``, else JETLOOM_PREFIX, else ``jetloom``."""
    return prefix or os.environ.get("JETLOOM_PREFIX") or DEFAULT_PREFIX


@dataclass(frozen=True)
class Subjects:
    """Subject, stream and bucket names under one prefix (one namespace per application)."""

    prefix: str = DEFAULT_PREFIX

    @classmethod
    def of(cls, prefix: str | None = None) -> Subjects:
        """The subjects of ``prefix``, else JETLOOM_PREFIX, else ``jetloom``."""
        return cls(prefix_or_default(prefix))

    def __post_init__(self) -> None:
        if not _PREFIX.match(self.prefix):
            raise ValueError(
                f"invalid prefix {self.prefix!r}: use up to 32 lower-case letters, digits, "
                "'-' or '_', starting with a letter"
            )

    @property
    def history_stream(self) -> str:
        """Stream of histories, dispatches and timers."""
        return f"{self.prefix.upper()}_HISTORY"

    @property
    def work_stream(self) -> str:
        """Work-queue stream consumed by workers."""
        return f"{self.prefix.upper()}_WORK"

    @property
    def deadletter_stream(self) -> str:
        """Stream of messages that could not be used."""
        return f"{self.prefix.upper()}_DEADLETTER"

    @property
    def instances_bucket(self) -> str:
        """KV bucket of instance records."""
        return f"{self.prefix}_instances"

    @property
    def payloads_bucket(self) -> str:
        """Object Store bucket of payloads over the inline size threshold."""
        return f"{self.prefix}_payloads"

    def history(self, instance_id: str) -> str:
        """Subject of one instance's history."""
        return f"{self.prefix}.history.{instance_id}"

    def timer(self, instance_id: str, timer_id: int | str) -> str:
        """Subject holding one timer's schedule."""
        return f"{self.prefix}.timer.{instance_id}.{timer_id}"

    def start(self, workflow_name: str) -> str:
        """Public subject to start a workflow."""
        return f"{self.prefix}.start.{workflow_name}"

    def is_start(self, subject: str) -> bool:
        """True for a public start subject (``<p>.start.<workflow>``)."""
        return subject.startswith(f"{self.prefix}.start.")

    def inbox(self, instance_id: str) -> str:
        """Subject of events sent to an instance from outside the history stream."""
        return f"{self.prefix}.inbox.{instance_id}"

    def outbox_workflow(self, instance_id: str) -> str:
        """Subject of work items for an instance written with history."""
        return f"{self.prefix}.outbox.workflow.{instance_id}"

    def outbox_activity(self, task_queue: str) -> str:
        """Subject of activity tasks of a task queue."""
        return f"{self.prefix}.outbox.activity.{task_queue}"

    def deadletter(self, kind: str) -> str:
        """Dead-letter subject for one kind of message."""
        return f"{self.prefix}.deadletter.{kind}"

    @property
    def work_routing(self) -> list[dict[str, str]]:
        """How the work stream sources dispatches from the history stream.

        Work for an instance lands on its inbox subject, so the workflows consumer needs the
        single filter ``<p>.*.*`` (start and inbox), much cheaper for the server than several
        filters; activity tasks keep their subjects.
        """
        p = self.prefix
        return [
            {"src": f"{p}.outbox.workflow.*", "dest": f"{p}.inbox.{{{{wildcard(1)}}}}"},
            {"src": f"{p}.outbox.activity.*", "dest": f"{p}.outbox.activity.{{{{wildcard(1)}}}}"},
        ]

    @property
    def workflow_work(self) -> list[str]:
        """Filter of the workflows consumer: start events and instance inboxes."""
        return [f"{self.prefix}.*.*"]

    @property
    def workflow_work_unrouted(self) -> list[str]:
        """Filters of the workflows consumer on a work stream created before inbox routing,
        which keeps sourced work items on ``<p>.outbox.workflow.<instance>``."""
        p = self.prefix
        return [f"{p}.start.*", f"{p}.inbox.*", f"{p}.outbox.workflow.*"]

    def instance_of(self, subject: str) -> str:
        """The instance id at the end of an inbox (or outbox.workflow) subject."""
        return subject.rsplit(".", 1)[-1]

    @property
    def workflows_consumer(self) -> str:
        """Durable consumer of workflow work items."""
        return "workflows"

    def activities_consumer(self, task_queue: str) -> str:
        """Durable consumer of a task queue's activity tasks."""
        return f"activities-{task_queue}"


@dataclass
class DispatchMessage:
    """A message written in the same atomic batch as history events."""

    subject: str
    data: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkStreamLayout:
    """What a runtime needs to know of the work stream as the server has it."""

    replicas: int
    workflow_filters: list[str]
    """Filters of the workflows consumer (one on inbox-routed streams, three on older ones)."""


@dataclass(frozen=True, slots=True)
class RecordEntry:
    """One instance record as ``read_records`` delivers it."""

    key: str
    """The instance id."""
    value: bytes | None
    """The encoded record; None once the instance is purged."""
    revision: int


_READER_ERRORS: tuple[type[Exception], ...] = (*TRANSIENT_ERRORS, nats.js.errors.APIError)
"""What makes a record reader replace its consumer."""


def _record_entry(msg: Msg, bucket: str) -> RecordEntry:
    """A message of the instances bucket as a ``RecordEntry``."""
    operation = (msg.headers or {}).get("KV-Operation")
    return RecordEntry(
        msg.subject[len(f"$KV.{bucket}."):],
        None if operation in ("DEL", "PURGE") else msg.data,
        msg.metadata.sequence.stream,
    )


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


async def connect_nats(url: str | None = None, **options: Any) -> NATS:
    """Connect with reconnection forever (a worker resumes whenever the server returns).

    ``url`` defaults to NATS_URL, then ``nats://127.0.0.1:4222``. Credentials that neither
    ``options`` nor the URL give come from NATS_USER/NATS_PASSWORD, NATS_TOKEN, NATS_CREDS or
    NATS_NKEY, and without a ``tls`` option NATS_CA, NATS_CERT and NATS_KEY make one (see
    ``NatsAuth``).
    """
    servers = nats_url(url)
    opts: dict[str, Any] = {
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.5,
        "connect_timeout": 5,
        "error_cb": _on_error,
        "reconnected_cb": _on_reconnected,
    }
    opts.update(env_defaults(options, servers=servers))
    nc = NATS()

    async def on_disconnected() -> None:
        if not (nc.is_closed or nc.is_draining):  # a deliberate close is no outage
            _log.warning("nats.disconnected")

    opts.setdefault("disconnected_cb", on_disconnected)
    # Reconnecting forever also covers the first connection, so refused credentials or a
    # failed TLS handshake would retry forever: watch for either and report it at once.
    refused: asyncio.Future[nats.errors.Error] = asyncio.get_running_loop().create_future()
    report_error = opts["error_cb"]

    def refusal(exc: BaseException) -> nats.errors.Error:
        if isinstance(exc, ssl.SSLError):
            return NatsTlsError(
                f"TLS with NATS at {redact_url(servers)} failed ({_tls_detail(exc)}); check "
                "the CA that signed the server's certificate (tls_ca, NATS_CA) and the client "
                "certificate the server may require (tls_cert/tls_key, NATS_CERT/NATS_KEY)",
                exc,
            )
        return NatsAuthorizationError(
            f"NATS at {redact_url(servers)} refused the credentials "
            f"({describe_options(opts, servers=servers)}: {str(exc) or type(exc).__name__}); "
            "check the user/password, token, nkey seed or creds file (NATS_USER/NATS_PASSWORD, "
            "NATS_TOKEN, NATS_NKEY, NATS_CREDS)"
        )

    async def on_error(exc: Exception) -> None:
        if not refused.done() and not nc.is_connected and _is_fatal(exc):
            refused.set_result(refusal(exc))
        await report_error(exc)

    opts["error_cb"] = on_error
    connecting: asyncio.Future[Any] = asyncio.ensure_future(
        nc.connect(servers=servers.split(","), **opts)
    )
    waiting: set[asyncio.Future[Any]] = {connecting, refused}
    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    if not connecting.done():
        connecting.cancel()
        with contextlib.suppress(BaseException):
            await connecting
        with contextlib.suppress(Exception):
            await nc.close()
        raise refused.result()
    try:
        await connecting  # raises the connection's own error, if any
    except Exception as exc:
        if refused.done():
            raise refused.result() from None
        if _is_fatal(exc):
            raise refusal(exc) from None
        raise
    return nc


class NatsAuthorizationError(nats.errors.Error):
    """The server refused this connection's credentials."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class NatsTlsError(nats.errors.Error):
    """The TLS handshake with the server failed (unknown CA, missing client certificate)."""

    def __init__(self, message: str, ssl_error: ssl.SSLError) -> None:
        super().__init__(message)
        self.message = message
        self.ssl_error = ssl_error

    def __str__(self) -> str:
        return self.message


def _is_fatal(exc: BaseException) -> bool:
    """Errors that retrying the same connection cannot fix: refused credentials, bad TLS."""
    if isinstance(exc, ssl.SSLError):
        return True
    text = str(exc).lower()
    return isinstance(exc, nats.errors.AuthorizationError) or "authorization" in text


def _tls_detail(exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    return str(exc.reason or exc)


def redact_url(url: str) -> str:
    """A server URL list without user, password or token (safe to print)."""
    return re.sub(r"//[^@/,]*@", "//", url)


_log = structlog.get_logger("jetloom.nats")


async def _on_error(exc: Exception) -> None:
    _log.warning("nats.error", error=str(exc) or type(exc).__name__)


async def _on_reconnected() -> None:
    _log.info("nats.reconnected")


class JetStreamBroker:
    """Everything jetloom does on JetStream, over one connection."""

    def __init__(
        self,
        nc: NATS,
        subjects: Subjects,
        *,
        replicas: int = 1,
        large_payload_threshold: int = DEFAULT_THRESHOLD,
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
        self.outbox_ttl = "24h"
        self._direct_inbox = nc.new_inbox()
        self._direct_sub: Subscription | None = None
        self._direct_token = 0
        self._direct_waiting: dict[str, _DirectGetReply] = {}
        self._committer = GroupCommitter(nc, self._last_seq_on)

    # ------------------------------------------------------------------ topology

    async def ensure_topology(self) -> None:
        """Create (or update) the streams and the buckets. Idempotent; never lowers replicas.

        Asked again for a few seconds while no leader answers (e.g. a cluster just restarted).
        """
        await retry_transient(self._ensure_topology)

    async def _ensure_topology(self) -> None:
        s = self.subjects
        await self._ensure_stream(
            {
                "name": s.history_stream,
                "subjects": [
                    f"{s.prefix}.history.*",
                    f"{s.prefix}.outbox.>",
                    f"{s.prefix}.timer.>",
                ],
                "retention": "limits",
                "storage": "file",
                "num_replicas": self.replicas,
                "allow_atomic": True,
                "allow_msg_ttl": True,
                "allow_msg_schedules": True,
                "allow_direct": True,
                "allow_rollup_hdrs": False,
                "deny_delete": False,
                "deny_purge": False,
                "duplicate_window": 120_000_000_000,
            }
        )
        await self._ensure_stream(
            {
                "name": s.work_stream,
                "subjects": [f"{s.prefix}.start.*", f"{s.prefix}.inbox.*"],
                "retention": "workqueue",
                "storage": "file",
                "num_replicas": self.replicas,
                "duplicate_window": 120_000_000_000,
                "sources": [{"name": s.history_stream, "subject_transforms": s.work_routing}],
            },
            sourced=True,
        )
        await self._ensure_stream(
            {
                "name": s.deadletter_stream,
                "subjects": [f"{s.prefix}.deadletter.>"],
                "retention": "limits",
                "storage": "file",
                "num_replicas": self.replicas,
                "max_age": 7 * 24 * 3600 * 1_000_000_000,
            }
        )
        await self.instances()
        await self.payloads.store()
        await self._raise_replicas(f"OBJ_{s.payloads_bucket}")

    async def _ensure_stream(self, config: dict[str, Any], *, sourced: bool = False) -> None:
        """Create a stream, or bring an existing one up to ``config``.

        Replicas are never lowered: a client or runtime left at the default ``replicas=1``
        that connects to a cluster whose streams run at R3 must not shrink them to R1 (which
        would make every node loss an outage). The larger count wins; it is only ever raised.

        A ``sourced`` stream that is new is returned only once its sources are active: the
        server starts a new stream's source some 100-200 ms after creating it, and a message
        stored in the source meanwhile, while the new stream takes messages of its own, can
        be skipped.
        """
        name = config["name"]
        reply = await self._api(f"STREAM.CREATE.{name}", config, allow_error=True)
        if sourced and "error" not in reply:
            await self._await_sources(name)
        error = reply.get("error")
        if error and error.get("err_code") == 10058:  # stream name already in use
            info = await self._api(f"STREAM.INFO.{name}", None)
            current = info["config"]
            wanted = {
                **config,
                "num_replicas": kept_replicas(current.get("num_replicas"), config["num_replicas"]),
            }
            if any(current.get(k) != v for k, v in wanted.items() if k != "sources"):
                await self._api(f"STREAM.UPDATE.{name}", {**current, **wanted})
        elif error:
            raise api_error(error)

    async def _await_sources(self, stream: str, timeout: float = SOURCE_START_TIMEOUT) -> None:
        """Wait (up to ``timeout`` seconds) until every source of ``stream`` is active."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = await self._api(f"STREAM.INFO.{stream}", None)
            sources = info.get("sources") or []
            if sources and all(int(src.get("active", -1)) >= 0 for src in sources):
                return
            await asyncio.sleep(0.01)
        _log.warning("stream.source_not_active", stream=stream, waited_s=timeout)

    async def _raise_replicas(self, stream: str) -> None:
        """Raise the replicas of an existing bucket's stream to ``self.replicas`` (never lower)."""
        if self.replicas <= 1:
            return
        info = await self._api(f"STREAM.INFO.{stream}", None)
        current = info["config"]
        if int(current.get("num_replicas") or 1) < self.replicas:
            await self._api(f"STREAM.UPDATE.{stream}", {**current, "num_replicas": self.replicas})

    async def api(self, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        """A JetStream API request (``$JS.API.<path>``); its reply, or the error raised."""
        return await self._api(path, body)

    async def _api(
        self,
        path: str,
        body: dict[str, Any] | None,
        *,
        allow_error: bool = False,
        timeout: float = 10,
    ) -> dict[str, Any]:
        payload = b"" if body is None else json.dumps(body).encode()
        msg = await self.nc.request(f"$JS.API.{path}", payload, timeout=timeout)
        reply: dict[str, Any] = json.loads(msg.data)
        if not allow_error and "error" in reply:
            raise api_error(reply["error"])
        return reply

    async def instances(self) -> KeyValue:
        """The instances KV bucket, created on first use."""
        if self._kv is None:
            try:
                kv = await self.js.key_value(self.subjects.instances_bucket)
                await self._raise_replicas(f"KV_{self.subjects.instances_bucket}")
                self._kv = kv
            except BucketNotFoundError:
                self._kv = await self.js.create_key_value(
                    KeyValueConfig(
                        bucket=self.subjects.instances_bucket,
                        history=1,
                        storage=StorageType.FILE,
                        replicas=self.replicas,
                    )
                )
        return self._kv

    async def ensure_consumer(
        self, name: str, filter_subjects: list[str], *, ack_wait: float, max_ack_pending: int
    ) -> None:
        """Create the durable pull consumer ``name`` on the work stream if it is missing."""
        config = {
            "durable_name": name,
            "ack_policy": "explicit",
            "ack_wait": int(ack_wait * 1_000_000_000),
            "max_deliver": -1,
            "max_ack_pending": max_ack_pending,
            "deliver_policy": "all",
        }
        if len(filter_subjects) == 1:  # one filter is far cheaper for the server than several
            config["filter_subject"] = filter_subjects[0]
        else:
            config["filter_subjects"] = filter_subjects
        stream = self.subjects.work_stream
        # No "action": create, or update the existing durable to this configuration.
        await self._api(f"CONSUMER.CREATE.{stream}.{name}", {"stream_name": stream,
                                                              "config": config})

    async def work_stream_layout(self) -> WorkStreamLayout:
        """The work stream as it exists on the server: its replicas, and the workflows
        consumer's filters.

        A work stream created before work items were routed to inboxes keeps its sourcing (a
        source is never re-configured under running workers), and with it the older filters.
        """
        info = await self._api(f"STREAM.INFO.{self.subjects.work_stream}", None)
        config = info["config"]
        routed = any(source.get("subject_transforms") for source in config.get("sources") or [])
        return WorkStreamLayout(
            replicas=int(config.get("num_replicas") or 1),
            workflow_filters=(
                self.subjects.workflow_work if routed else self.subjects.workflow_work_unrouted
            ),
        )

    async def ack_wait(self, consumer: str) -> float:
        """The lease (ack_wait, seconds) the server applies to a work-stream consumer."""
        info = await self._api(f"CONSUMER.INFO.{self.subjects.work_stream}.{consumer}", None)
        return float(info["config"]["ack_wait"]) / 1_000_000_000

    # ------------------------------------------------------------------- history

    async def append(
        self,
        instance_id: str,
        expected_last_seq: int,
        events: Sequence[bytes],
        dispatches: Sequence[DispatchMessage] = (),
    ) -> int:
        """Append history events and their dispatches atomically.

        The append is written in one atomic batch together with other instances' appends that
        are waiting (group commit), and commits only if the instance's last history sequence is
        still ``expected_last_seq`` (0: no history yet).

        Returns:
            The stream sequence of the last appended history event.

        Raises:
            AppendConflictError: another writer advanced the history first.
            UnavailableError: the stream had no (ready) leader for several seconds; nothing was
                stored.
        """
        subject = self.subjects.history(instance_id)
        messages: list[DispatchMessage] = [
            DispatchMessage(subject, data) for data in events
        ] + list(dispatches)
        if not messages:
            return expected_last_seq
        if len(messages) > MAX_BATCH:
            raise ValueError(
                f"a workflow task of {instance_id!r} produced {len(messages)} messages; "
                f"at most {MAX_BATCH} fit one atomic append: split the fan-out"
            )
        # Group commit: written together with other instances' appends that are waiting.
        return await self._committer.append(subject, expected_last_seq, messages, len(events))

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
                await self.js.publish(
                    message.subject, message.data, headers=message.headers or None, timeout=10
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

    async def _last_seq_on(self, subject: str) -> int:
        return (await self._last_message_on(subject))[0]

    async def _last_message_on(self, subject: str) -> tuple[int, bytes | None]:
        try:
            msg = await self.nc.request(
                f"$JS.API.DIRECT.GET.{self.subjects.history_stream}",
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
        """Remove an instance's history, pending timers and record."""
        s = self.subjects
        await self._api(f"STREAM.PURGE.{s.history_stream}", {"filter": s.history(instance_id)})
        await self._api(
            f"STREAM.PURGE.{s.history_stream}", {"filter": f"{s.prefix}.timer.{instance_id}.>"}
        )
        kv = await self.instances()
        await kv.purge(instance_id)

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
            return (await self.js.publish(subject, data, headers=hdrs or None, timeout=10)).seq
        hdrs["Nats-Msg-Id"] = msg_id

        async def send() -> int:
            return (await self.js.publish(subject, data, headers=hdrs, timeout=10)).seq

        return await retry_transient(send)

    async def publish_unique(
        self, subject: str, data: bytes, *, msg_id: str, headers: dict[str, str] | None = None
    ) -> bool:
        """Publish a message that only the first publisher of ``msg_id`` may write.

        Returns False if the stream already holds a message with that id (within its duplicate
        window) from someone else. A publish sent again after a lost ack (a leader election)
        that finds its own first copy counts as written.
        """
        hdrs = {**(headers or {}), "Nats-Msg-Id": msg_id}
        attempts = 0

        async def send() -> bool:
            nonlocal attempts
            attempts += 1
            ack = await self.js.publish(subject, data, headers=hdrs, timeout=10)
            return not ack.duplicate or attempts > 1

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

    # ------------------------------------------------------------------------ KV

    async def get_record(self, instance_id: str) -> tuple[bytes, int] | None:
        """An instance's KV record and its revision, or None.

        Read with one stream message get (what ``KeyValue.get`` sends, without its layers);
        asked again for a few seconds while a leader is being elected.
        """
        return await retry_transient(lambda: self._get_record(instance_id))

    async def _get_record(self, instance_id: str) -> tuple[bytes, int] | None:
        await self.instances()  # the bucket exists
        bucket = self.subjects.instances_bucket
        reply = await self._api(
            f"STREAM.MSG.GET.KV_{bucket}", {"last_by_subj": f"$KV.{bucket}.{instance_id}"},
            allow_error=True, timeout=READ_TIMEOUT,
        )
        error = reply.get("error")
        if error:
            if error.get("code") == 404:
                return None
            raise api_error(error)  # a 503 (no leader now) is an UnavailableError
        message = reply["message"]
        if b"KV-Operation" in base64.b64decode(message.get("hdrs") or ""):
            return None  # a delete or purge marker
        return base64.b64decode(message.get("data") or ""), int(message["seq"])

    async def put_record(
        self,
        instance_id: str,
        value: bytes,
        history_seq: int,
        seq_of: Callable[[bytes], int],
        *,
        revision: int | None = None,
        new: bool = False,
    ) -> int | None:
        """Write a record unless the stored one reflects more history (``seq_of(bytes)``).

        ``revision`` (the revision the caller wrote last) or ``new`` (no record expected) try
        a single compare-and-set first. Returns the new revision (None: not written).
        """
        kv = await self.instances()
        try:
            if new:
                return int(await kv.create(instance_id, value))
            if revision is not None:
                return await self._update_record(instance_id, value, revision)
        except (KeyWrongLastSequenceError, nats.js.errors.BadRequestError):
            pass  # someone else wrote in between: compare below
        for _ in range(20):
            current = await self.get_record(instance_id)
            try:
                if current is None:
                    return int(await kv.create(instance_id, value))
                if seq_of(current[0]) > history_seq:
                    return None
                return await self._update_record(instance_id, value, current[1])
            except (KeyWrongLastSequenceError, nats.js.errors.BadRequestError):
                continue
        raise RuntimeError(f"could not update the record of {instance_id!r}: too much contention")

    async def claim_record(
        self, instance_id: str, value: bytes, revision: int | None
    ) -> int | None:
        """Write a record only if it is still as the caller read it: absent (``revision``
        None) or at ``revision``. Its new revision, or None if someone else wrote it in
        between. Asked again for a few seconds while a leader is being elected."""
        kv = await self.instances()
        answered = True

        async def attempt() -> int | None:
            nonlocal answered
            try:
                if revision is None:
                    return int(await kv.create(instance_id, value))
                return await self._update_record(instance_id, value, revision)
            except (KeyWrongLastSequenceError, nats.js.errors.BadRequestError):
                if not answered:  # an earlier attempt may have written it, its answer lost
                    current = await self._get_record(instance_id)
                    if current is not None and current[0] == value:
                        return current[1]
                return None
            except BaseException:
                answered = False
                raise

        return await retry_transient(attempt)

    async def release_record(
        self, instance_id: str, previous: bytes | None, revision: int
    ) -> None:
        """Undo a ``claim_record`` that wrote ``revision``: put back the ``previous`` value
        (None: no record), unless the record changed since."""
        kv = await self.instances()
        # Best effort: the caller is failing already and raises its own error.
        with contextlib.suppress(Exception):
            if previous is None:
                await kv.delete(instance_id, last=revision)
            else:
                await self._update_record(instance_id, previous, revision)

    async def _update_record(self, instance_id: str, value: bytes, revision: int) -> int:
        """Replace a record if its revision is still ``revision``; the new revision.

        The same message as ``KeyValue.update``, without its layers (a write per task).
        """
        reply = await self.nc.request(
            f"$KV.{self.subjects.instances_bucket}.{instance_id}", value,
            headers={"Nats-Expected-Last-Subject-Sequence": str(revision)}, timeout=10,
        )
        ack: dict[str, Any] = json.loads(reply.data)
        error = ack.get("error")
        if error:
            if error.get("err_code") in (ERR_WRONG_LAST_SEQUENCE, ERR_WRONG_LAST_SEQUENCE_CONSTANT):
                raise KeyWrongLastSequenceError(description=error.get("description", ""))
            raise api_error(error)
        return int(ack["seq"])

    async def watch_record(self, instance_id: str) -> AsyncGenerator[bytes | None, None]:
        """Yield the record's current value, then every change, until the caller stops."""
        kv = await self.instances()
        watcher = await kv.watch(instance_id)
        try:
            while True:
                entry = await watcher.updates(timeout=None)  # type: ignore[no-untyped-call]
                if entry is None:
                    continue
                yield entry.value if entry.operation is None else None
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]

    async def list_records(self) -> list[bytes]:
        """Every instance record (deleted and purged ones left out)."""
        latest: dict[str, bytes | None] = {}
        async for entry in self.read_records():
            if entry is None:
                break
            latest[entry.key] = entry.value  # a reader that started over repeats keys
        return [value for value in latest.values() if value is not None]

    async def read_records(self) -> AsyncGenerator[RecordEntry | None, None]:
        """Every instance record's current value, then ``None`` once all of them are delivered,
        then every later change, until the caller stops.

        A pull consumer delivers nothing before it is asked, so its pending count at creation
        says exactly how many current values there are. (A push watch can be told "no more"
        before its first values are handled, and a listing then comes back empty.) If the
        consumer is lost (a leader election, a server restart) a new one takes over: before the
        ``None`` it starts the current values over (keys may repeat), after it it goes on from
        the next revision.
        """
        await self.instances()
        caught_up = False
        after = 0  # the highest revision delivered
        failing_since: float | None = None
        while True:
            created, sub = await retry_transient(
                functools.partial(self._record_reader, after + 1 if caught_up else None)
            )
            try:
                if not caught_up and int(created.get("num_pending", 0)) == 0:
                    caught_up = True
                    yield None
                while True:
                    try:
                        messages = await sub.fetch(RECORD_READ_BATCH, timeout=RECORD_READ_WAIT)
                    except TimeoutError:
                        continue  # nothing changed: ask again
                    failing_since = None
                    for msg in messages:
                        entry = _record_entry(msg, self.subjects.instances_bucket)
                        after = max(after, entry.revision)
                        yield entry
                        if not caught_up and msg.metadata.num_pending == 0:
                            caught_up = True
                            yield None
            except _READER_ERRORS as exc:
                # The consumer went away or its server is failing over: start a new one, for
                # as long as retry_transient would keep asking.
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since > RECORD_READER_RETRY_BUDGET:
                    raise
                _log.info("records.reader_restarted", error=repr(exc))
                await asyncio.sleep(0.2)
            finally:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

    async def _record_reader(self, from_seq: int | None) -> tuple[dict[str, Any], Any]:
        """A pull consumer on the instances bucket: the current value of every key
        (``from_seq`` None), or every change from ``from_seq``; its creation reply and
        subscription."""
        bucket = self.subjects.instances_bucket
        stream = f"KV_{bucket}"
        deliver: dict[str, Any] = (
            {"deliver_policy": "last_per_subject"} if from_seq is None
            else {"deliver_policy": "by_start_sequence", "opt_start_seq": from_seq}
        )
        # Created by the plain API subject (no name in it), which a viewer is allowed to use.
        created = await self._api(f"CONSUMER.CREATE.{stream}", {
            "stream_name": stream,
            "config": {
                "filter_subject": f"$KV.{bucket}.>",
                "ack_policy": "none",
                "inactive_threshold": int(RECORD_READER_IDLE * 1_000_000_000),
                "mem_storage": True,
                **deliver,
            },
        })
        sub = await self.js.pull_subscribe_bind(
            durable=None, stream=stream, name=created["name"]
        )
        return created, sub

