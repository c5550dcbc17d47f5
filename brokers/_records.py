"""Instance records: the ``<p>_instances`` KV bucket, the readable projection of histories.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

import nats
import nats.errors
import nats.js.errors
import structlog
from nats.aio.msg import Msg
from nats.js.errors import KeyWrongLastSequenceError

from brokers._errors import (
    ERR_WRONG_LAST_SEQUENCE,
    ERR_WRONG_LAST_SEQUENCE_CONSTANT,
    TRANSIENT_ERRORS,
    api_error,
    retry_transient,
)
from brokers._requests import request
from brokers._topology import READ_TIMEOUT, BrokerBase

RECORD_READ_BATCH = 1000
"""Instance records asked for at once by ``read_records``."""
RECORD_READ_WAIT = 5.0
"""Seconds ``read_records`` waits for a change before asking again."""
RECORD_READER_IDLE = 30.0
"""Seconds after which the server drops the consumer of a record reader that went away."""
RECORD_READER_RETRY_BUDGET = 20.0
"""Seconds a record reader keeps replacing a consumer that fails before it gives up."""

_log = structlog.get_logger("jetloom.nats")


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


class RecordStore(BrokerBase):
    """Instance records in the ``<p>_instances`` KV bucket: read, written with compare-and-set,
    listed and followed."""


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
        keep_equal: bool = False,
    ) -> int | None:
        """Write a record unless the stored one reflects more history (``seq_of(bytes)``), or,
        with ``keep_equal``, as much.

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
                stored_seq = seq_of(current[0])
                if stored_seq > history_seq or (keep_equal and stored_seq == history_seq):
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
        reply = await request(
            self.nc, f"$KV.{self.subjects.instances_bucket}.{instance_id}", value,
            headers={"Nats-Expected-Last-Subject-Sequence": str(revision)}, timeout=10,
        )
        ack: dict[str, Any] = json.loads(reply.data)
        error = ack.get("error")
        if error:
            if error.get("err_code") in (ERR_WRONG_LAST_SEQUENCE, ERR_WRONG_LAST_SEQUENCE_CONSTANT):
                raise KeyWrongLastSequenceError(description=error.get("description", ""))
            raise api_error(error)
        return int(ack["seq"])

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
