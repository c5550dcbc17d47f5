"""Worker heartbeats: each runtime says who it is in the KV bucket ``<p>_workers``, every few
seconds; a key the runtime stops refreshing expires with the bucket's TTL.

The console (and anyone else) reads the bucket to see which workers were alive recently, what
they host and since when. A heartbeat is best effort: a failing put is logged and tried again
at the next beat, it never stops the runtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import socket
from collections.abc import Sequence
from datetime import UTC, datetime

import msgspec
import nats.errors
import nats.js.errors
import structlog
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue

from brokers._errors import JetStreamError
from brokers._jetstream import JetStreamBroker
from brokers._tasks import raise_if_cancelling

_log = structlog.get_logger("jetloom.heartbeat")

HEARTBEAT_INTERVAL = 5.0
"""Seconds between two puts of a runtime's entry."""
HEARTBEAT_TTL = 15.0
"""Seconds an entry lives after its last put: three missed beats and the worker is gone."""
_ERR_STREAM_NOT_FOUND = 10059
_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


class WorkerInfo(msgspec.Struct, frozen=True, omit_defaults=True):
    """One runtime, as its heartbeat describes it (the value under its id in ``<p>_workers``)."""

    id: str
    host: str
    pid: int
    started_at: datetime
    beat_at: datetime
    workflows: list[str] = []
    activities: list[str] = []
    task_queues: list[str] = []


def workers_bucket(prefix: str) -> str:
    """Name of the KV bucket of worker heartbeats for ``prefix``."""
    return f"{prefix}_workers"


def _worker_id(host: str, pid: int) -> str:
    """A key naming one runtime: host and pid for people, a random tail for restarts."""
    return _KEY_UNSAFE.sub("_", f"{host}-{pid}-{secrets.token_hex(3)}")


class WorkerHeartbeat:
    """Puts a runtime's ``WorkerInfo`` into ``<p>_workers`` every ``interval`` seconds.

    Start ``run()`` as a task next to the runtime's loops; cancelling it removes the entry.
    """

    def __init__(
        self,
        broker: JetStreamBroker,
        *,
        workflows: Sequence[str] = (),
        activities: Sequence[str] = (),
        task_queues: Sequence[str] = (),
        interval: float = HEARTBEAT_INTERVAL,
        ttl: float = HEARTBEAT_TTL,
    ) -> None:
        host = socket.gethostname()
        pid = os.getpid()
        self._broker = broker
        self._interval = interval
        self._ttl = ttl
        self._info = WorkerInfo(
            id=_worker_id(host, pid),
            host=host,
            pid=pid,
            started_at=datetime.now(UTC),
            beat_at=datetime.now(UTC),
            workflows=list(workflows),
            activities=list(activities),
            task_queues=list(task_queues) if activities else [],
        )
        self._kv: KeyValue | None = None

    @property
    def worker_id(self) -> str:
        """The key of this runtime's entry."""
        return self._info.id

    async def run(self) -> None:
        """Beat until cancelled, then delete the entry (best effort)."""
        last_error = ""
        try:
            while True:
                try:
                    await self.beat()
                    last_error = ""
                except (nats.errors.Error, JetStreamError, OSError) as exc:
                    error = f"{type(exc).__name__}: {exc}"
                    if error != last_error:  # once per distinct failure, not every beat
                        _log.warning("heartbeat.failed", worker=self.worker_id, error=error)
                    last_error = error
                # A stop that came as a beat's reply did is dropped by nats-py's request on
                # Python 3.11; without this the loop would beat on and shutdown would hang.
                raise_if_cancelling()
                await asyncio.sleep(self._interval)
        finally:
            if self._kv is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._kv.delete(self.worker_id), 2)

    async def beat(self) -> None:
        """Put the entry once, with the current time."""
        kv = await self._bucket()
        info = msgspec.structs.replace(self._info, beat_at=datetime.now(UTC))
        await kv.put(self.worker_id, msgspec.json.encode(info))

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            name = workers_bucket(self._broker.subjects.prefix)
            try:
                self._kv = await self._broker.js.key_value(name)
            except nats.js.errors.BucketNotFoundError:
                self._kv = await self._broker.js.create_key_value(
                    KeyValueConfig(
                        bucket=name,
                        history=1,
                        ttl=self._ttl,
                        storage=StorageType.MEMORY,  # who is alive now; nothing to keep
                        replicas=self._broker.replicas,
                    )
                )
        return self._kv


_decode_worker = msgspec.json.Decoder(WorkerInfo)


async def read_workers(broker: JetStreamBroker) -> list[WorkerInfo]:
    """The workers whose heartbeat has not expired, oldest start first ([] before any beat).

    Read with a pull consumer that delivers the last value of every key: its pending count at
    creation says how many there are, so the read never stops early.
    """
    bucket = workers_bucket(broker.subjects.prefix)
    stream = f"KV_{bucket}"
    try:
        created = await broker.api(
            f"CONSUMER.CREATE.{stream}",
            {
                "stream_name": stream,
                "config": {
                    "filter_subject": f"$KV.{bucket}.>",
                    "deliver_policy": "last_per_subject",
                    "ack_policy": "none",
                    "inactive_threshold": 5_000_000_000,
                    "mem_storage": True,
                },
            },
        )
    except JetStreamError as exc:
        if exc.err_code == _ERR_STREAM_NOT_FOUND:
            return []
        raise
    pending = int(created.get("num_pending", 0))
    sub = await broker.js.pull_subscribe_bind(durable=None, stream=stream, name=created["name"])
    workers: list[WorkerInfo] = []
    delivered = 0
    try:
        while delivered < pending:
            messages = await sub.fetch(pending - delivered, timeout=2)
            delivered += len(messages)
            for msg in messages:
                if (msg.headers or {}).get("KV-Operation") in ("DEL", "PURGE"):
                    continue
                with contextlib.suppress(msgspec.DecodeError):  # not a heartbeat: skip it
                    workers.append(_decode_worker.decode(msg.data))
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
        with contextlib.suppress(Exception):
            await broker.api(f"CONSUMER.DELETE.{stream}.{created['name']}", None)
    return sorted(workers, key=lambda w: (w.started_at, w.id))
