"""The streams, buckets and consumers of a prefix, created (or brought up to date) idempotently;
the JetStream API requests every part of the broker uses.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import nats.js.errors
import structlog
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError
from nats.js.kv import KeyValue

from brokers._errors import api_error, retry_transient
from brokers._payload_store import PayloadStore
from brokers._requests import request
from brokers._subjects import Subjects

PURGE_MARKER_TTL = 60.0
"""Seconds the marker of a purged key stays in a KV bucket: long enough for every watch to see
the key go, short enough that purged instances leave nothing behind."""
READ_TIMEOUT = 3.0
"""Seconds a read (direct get, message get) waits for its answer before it is asked again
(``retry_transient``): a healthy server answers in a millisecond; during a leader election
the request may have gone to a leader that is gone."""
SOURCE_START_TIMEOUT = 5.0
"""Seconds ``ensure_topology`` waits for a new work stream's source to start."""

_log = structlog.get_logger("jetloom.nats")


def kept_replicas(current: int | None, requested: int) -> int:
    """The replicas an existing stream keeps when a runtime asks for ``requested``: the larger.

    Replicas are only ever raised by ``ensure_topology``, never lowered (see docs/cluster.md).
    """
    return max(int(current or 1), requested)


@dataclass(frozen=True)
class WorkStreamLayout:
    """What a runtime needs to know of the work stream as the server has it."""

    replicas: int
    workflow_filters: list[str]
    """Filters of the default workflows consumer (one on inbox-routed streams, three on older
    ones)."""
    routed: bool = True
    """False for a work stream created before inbox routing (its sourced work items keep their
    outbox subjects)."""


def _source_key(source: dict[str, Any]) -> tuple[Any, ...]:
    transforms = tuple(
        (t.get("src"), t.get("dest")) for t in source.get("subject_transforms") or []
    )
    return (source.get("name"), source.get("filter_subject") or "", transforms)


def _kept_sources(
    current: list[dict[str, Any]], wanted: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The sources an existing stream ends up with: its own, as they are, plus the wanted ones
    it lacks.

    A source is never changed under running workers: the server identifies a source by its
    stream, filter and transforms, and one that changed would start again from the beginning
    of the history stream, delivering every dispatch still there a second time. A stream
    created before inbox routing (sources without transforms) keeps its sources as they are.
    """
    if current and not any(source.get("subject_transforms") for source in current):
        return current
    have = {_source_key(source) for source in current}
    return [*current, *(source for source in wanted if _source_key(source) not in have)]


class BrokerBase:
    """What every part of the broker shares: the connection, JetStream, the prefix's names,
    and the JetStream API."""

    nc: NATS
    js: JetStreamContext
    subjects: Subjects
    replicas: int
    payloads: PayloadStore
    _kv: KeyValue | None


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
                    f"{s.prefix}.cancel.*",
                    f"{s.prefix}.schedule.*",
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
                # start events and inboxes, of the default application and of named ones
                "subjects": [
                    f"{s.prefix}.start.*", f"{s.prefix}.inbox.*", f"{s.prefix}.app.*.*.*",
                ],
                "retention": "workqueue",
                "storage": "file",
                "num_replicas": self.replicas,
                "duplicate_window": 120_000_000_000,
                "sources": [
                    {"name": s.history_stream, "subject_transforms": s.work_routing},
                    {"name": s.history_stream, "subject_transforms": s.app_work_routing},
                ],
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
            if "sources" in wanted:
                wanted["sources"] = _kept_sources(current.get("sources") or [], wanted["sources"])
            if any(current.get(k) != v for k, v in wanted.items() if k != "sources") or (
                len(wanted.get("sources", [])) != len(current.get("sources") or [])
            ):
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
        msg = await request(self.nc, f"$JS.API.{path}", payload, timeout=timeout)
        reply: dict[str, Any] = json.loads(msg.data)
        if not allow_error and "error" in reply:
            raise api_error(reply["error"])
        return reply

    async def instances(self) -> KeyValue:
        """The instances KV bucket, created on first use."""
        if self._kv is None:
            self._kv = await self._bucket(self.subjects.instances_bucket)
        return self._kv

    async def _bucket(self, bucket: str) -> KeyValue:
        """A KV bucket (history 1, file storage), created if missing; replicas raised to the
        broker's (never lowered).

        Its stream allows per-message TTLs, so that the marker a purge leaves expires
        (``purge_key``); a bucket created by an older client is updated to allow them, if the
        user may (else its purge markers stay, as before).
        """
        try:
            kv = await self.js.key_value(bucket)
        except BucketNotFoundError:
            return await self.js.create_key_value(  # allows per-message TTLs
                KeyValueConfig(
                    bucket=bucket, history=1, storage=StorageType.FILE, replicas=self.replicas,
                )
            )
        info = await self._api(f"STREAM.INFO.KV_{bucket}", None)
        current = info["config"]
        wanted = {
            "allow_msg_ttl": True,
            "num_replicas": kept_replicas(current.get("num_replicas"), self.replicas),
        }
        if any(current.get(k) != v for k, v in wanted.items()):
            try:
                await self._api(f"STREAM.UPDATE.KV_{bucket}", {**current, **wanted})
            except Exception as exc:  # e.g. no permission to update: keep working as before
                _log.warning("bucket.update_failed", bucket=bucket, error=repr(exc))
        return kv

    async def purge_key(self, kv: KeyValue, key: str) -> None:
        """Purge a key, leaving a marker (watchers see the key go) that expires after
        ``PURGE_MARKER_TTL``; a bucket without per-message TTLs keeps the marker."""
        try:
            await kv.purge(key, msg_ttl=PURGE_MARKER_TTL)
        except nats.js.errors.BadRequestError:
            await kv.purge(key)

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
            workflow_filters=self.subjects.workflow_filters("", routed=routed),
            routed=routed,
        )

    async def ack_wait(self, consumer: str) -> float:
        """The lease (ack_wait, seconds) the server applies to a work-stream consumer."""
        info = await self._api(f"CONSUMER.INFO.{self.subjects.work_stream}.{consumer}", None)
        return float(info["config"]["ack_wait"]) / 1_000_000_000
