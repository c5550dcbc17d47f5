"""One watch of the instances bucket per client, shared by every wait on it.

A KV watch per waiting call costs the server a consumer per call. ``RecordWatch`` keeps a
single ephemeral pull consumer on ``KV_<p>_instances`` that delivers every change made after
it was created, and hands each change to the subscriptions registered for its key (the
instance id).

Why no change can slip through:

- ``subscribe`` registers the subscription first, waits until the consumer exists, and only
  then reads the current record. A write after the read reaches the consumer; a write before
  it is in the read. A subscription keeps revisions strictly increasing, so what the consumer
  delivers late (older than the read) is dropped.
- The consumer acknowledges nothing (``ack_policy none``), so it never redelivers and its
  consumer sequences have no gaps. A gap means messages were lost on the way to us (delivered
  while the connection was down): the consumer is replaced.
- A consumer that goes away (a server restart, a fail-over, a long disconnection) or a
  connection that reconnected is replaced by one that starts at the stream sequence after the
  last change handled, so the changes in between are delivered. After a replacement every
  subscribed key is read again as well, which costs little and covers what the consumer may
  not say.

Pull requests are this module's own (as in ``brokers._pull``), not nats-py's ``fetch``, which
lingers to fill its batch: a change is handed on the moment it arrives.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import nats.errors
import structlog
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from brokers._errors import TRANSIENT_ERRORS, api_error, retry_transient
from brokers._jetstream import JetStreamBroker
from brokers._records import RecordEntry, _record_entry
from brokers._tasks import stop_tasks
from brokers._topology import READ_TIMEOUT

log = structlog.get_logger("jetloom.records")

WATCH_BATCH = 512
"""Messages one pull request asks for; the next is sent once fewer than half are still due."""
WATCH_EXPIRES = 30.0
"""Seconds a pull request lives on the server before it is renewed."""
WATCH_HEARTBEAT = 2.0
"""Seconds between the server's idle heartbeats on an open pull request. After two of them
unheard the consumer is checked, and replaced if it is gone."""
WATCH_CHECK = 1.0
"""Seconds between checks for a reconnect of the connection and for silence."""
WATCH_IDLE = 10.0
"""Seconds after its last pull request after which the server removes a consumer: one that
was replaced, or whose client closed or went away. A consumer in use always has one open."""
REREAD_CONCURRENCY = 32
"""Records read at once when every subscribed key is read again after a replacement."""
RETRY_DELAY_MAX = 2.0
"""Longest pause between attempts to create a consumer while the server does not answer."""

_REQUEST_ENDED = frozenset({"404", "408"})
"""Pull statuses that only end a request: 408 (expired), 404 (no messages). Any other status
replaces the consumer: 409 (deleted, leader changed, server shutdown), 503 (no responders: the
consumer is gone or has no leader)."""

ERR_NO_MESSAGE_FOUND = 10037
"""The key was never written (or its marker is gone)."""


class WatchClosedError(ConnectionError):
    """The record watch was stopped (its client closed): a wait on it cannot finish."""


class RecordChanges:
    """One subscription to an instance record: its value when the subscription began
    (``current``), then every later change (``next``), each newer than the one before."""

    def __init__(self, instance_id: str, accept: Callable[[bytes], bool] | None) -> None:
        self.instance_id = instance_id
        self.current: RecordEntry | None = None
        """The record when the subscription began; None if there was none (or it was purged)."""
        self._accept = accept
        self._revision: int | None = None  # the newest revision seen; None until read
        self._held: list[RecordEntry] = []  # changes that arrived before the first read
        self._queue: asyncio.Queue[RecordEntry | BaseException] = asyncio.Queue()

    async def next(self) -> RecordEntry:
        """The next change: a new value (one ``accept`` took, if given) or a deletion
        (``value`` None).

        Raises:
            WatchClosedError: the watch was stopped.
        """
        item = await self._queue.get()
        if isinstance(item, BaseException):
            self._queue.put_nowait(item)  # every later call raises it too
            raise item
        return item

    def _begin(self, entry: RecordEntry) -> None:
        """Set the current value (as read) and hand on what arrived meanwhile, if newer."""
        self.current = entry if entry.value is not None else None
        self._revision = entry.revision
        held, self._held = self._held, []
        for change in held:
            self._offer(change)

    def _offer(self, entry: RecordEntry) -> None:
        """Take a change from the consumer or a read; anything not newer is dropped."""
        if self._revision is None:
            self._held.append(entry)
            return
        if entry.revision <= self._revision:
            return
        self._revision = entry.revision
        if entry.value is None or self._accepts(entry.value):
            self._queue.put_nowait(entry)

    def _accepts(self, value: bytes) -> bool:
        if self._accept is None:
            return True
        try:
            return self._accept(value)
        except Exception:
            return True  # let the subscriber's own decoding report it

    def _fail(self, error: BaseException) -> None:
        self._queue.put_nowait(error)


class RecordWatch:
    """Every change of the instances bucket, from one consumer, handed to subscriptions by
    instance id.

    The consumer is created by the first ``subscribe`` and lives until ``close``.
    """

    def __init__(self, broker: JetStreamBroker) -> None:
        self._broker = broker
        self._nc = broker.nc
        bucket = broker.subjects.instances_bucket
        self._stream = f"KV_{bucket}"
        self._key_prefix = f"$KV.{bucket}."
        self._filter = f"{self._key_prefix}>"
        self._bucket = bucket
        self._subscribers: dict[str, set[RecordChanges]] = {}
        self._task: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[None] | None = None
        self._closed = False
        self._background: set[asyncio.Task[None]] = set()
        # The consumer being read, and how far it got.
        self.consumer: str | None = None
        """Name of the current server consumer (None before the first subscription)."""
        self.replacements = 0
        """How many times the consumer was replaced (restarts, fail-overs, lost messages)."""
        self._after = 0  # stream sequence of the last change handled; all before it were
        self._delivered = 0  # consumer sequence of the last message handled
        self._generation = 0
        self._sub: Subscription | None = None
        self._inbox = ""
        self._open: dict[str, int] = {}  # pull request token -> messages still due
        self._tokens = itertools.count()
        self._last_heard = 0.0
        self._reconnects = 0
        self._replace: asyncio.Future[str] | None = None

    # ------------------------------------------------------------------ public

    @contextlib.asynccontextmanager
    async def subscribe(
        self, instance_id: str, *, accept: Callable[[bytes], bool] | None = None
    ) -> AsyncIterator[RecordChanges]:
        """Follow one instance's record: register, make sure the watch runs, read the current
        value; then every later change (only the values ``accept`` takes, and deletions).

        The initial read is retried while the server does not answer: bound the wait with
        ``asyncio.timeout``.

        Raises:
            WatchClosedError: the watch was stopped.
        """
        if self._closed:
            raise WatchClosedError("the record watch is closed (its client was closed)")
        changes = RecordChanges(instance_id, accept)
        self._subscribers.setdefault(instance_id, set()).add(changes)
        try:
            await self._running()
            changes._begin(await self.read(instance_id, patient=True))
            yield changes
        finally:
            subscribed = self._subscribers.get(instance_id)
            if subscribed is not None:
                subscribed.discard(changes)
                if not subscribed:
                    del self._subscribers[instance_id]

    async def read(self, instance_id: str, *, patient: bool = False) -> RecordEntry:
        """The record as stored now, with its revision even if it is a deletion marker
        (revision 0: never written). Asked again while a leader is being elected; ``patient``
        asks until it is answered."""
        return await retry_transient(
            lambda: self._read(instance_id), budget=float("inf") if patient else 20.0
        )

    async def close(self) -> None:
        """Stop the watch (the server removes its consumer ``WATCH_IDLE`` seconds later);
        subscriptions still open raise ``WatchClosedError``."""
        self._closed = True
        tasks = [t for t in (self._task, *self._background) if t is not None]
        await stop_tasks(tasks)
        self._fail_all(WatchClosedError("the record watch was closed (its client was closed)"))

    # ----------------------------------------------------------------- reading

    async def _read(self, instance_id: str) -> RecordEntry:
        msg = await self._nc.request(
            f"$JS.API.STREAM.MSG.GET.{self._stream}",
            json.dumps({"last_by_subj": f"{self._key_prefix}{instance_id}"}).encode(),
            timeout=READ_TIMEOUT,
        )
        reply: dict[str, Any] = json.loads(msg.data)
        error = reply.get("error")
        if error:
            if error.get("err_code") == ERR_NO_MESSAGE_FOUND:
                return RecordEntry(instance_id, None, 0)
            raise api_error(error)  # a 503 (no leader now) is an UnavailableError
        message = reply["message"]
        revision = int(message["seq"])
        if b"KV-Operation" in base64.b64decode(message.get("hdrs") or ""):
            return RecordEntry(instance_id, None, revision)  # a delete or purge marker
        return RecordEntry(instance_id, base64.b64decode(message.get("data") or ""), revision)

    def _dispatch(self, entry: RecordEntry) -> None:
        for changes in tuple(self._subscribers.get(entry.key, ())):
            changes._offer(entry)

    def _read_all_again(self) -> None:
        """Read every subscribed key again (in the background) and hand on what changed."""
        keys = list(self._subscribers)
        if not keys:
            return
        limit = asyncio.Semaphore(REREAD_CONCURRENCY)

        async def read_one(key: str) -> None:
            async with limit:
                try:
                    entry = await self.read(key)
                except Exception as exc:  # the consumer delivers what changes next anyway
                    log.warning("records.watch_reread_failed", instance_id=key, error=repr(exc))
                    return
            self._dispatch(entry)

        async def read_all() -> None:
            await asyncio.gather(*(read_one(key) for key in keys))

        task = asyncio.get_running_loop().create_task(read_all())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _fail_all(self, error: BaseException) -> None:
        for subscribed in self._subscribers.values():
            for changes in subscribed:
                changes._fail(error)

    # ---------------------------------------------------------------- consumer

    async def _running(self) -> None:
        """Start the watch if it is not running; return once its consumer exists."""
        if self._task is None or self._task.done():
            loop = asyncio.get_running_loop()
            ready: asyncio.Future[None] = loop.create_future()
            # Mark a failure as seen even if every waiter gave up before it came.
            ready.add_done_callback(lambda f: f.cancelled() or f.exception())
            self._ready = ready
            self._task = loop.create_task(self._run(ready), name="jetloom-record-watch")
        assert self._ready is not None
        await asyncio.shield(self._ready)

    async def _run(self, ready: asyncio.Future[None]) -> None:
        """Create the consumer and follow it; replace it whenever it fails, from the change
        after the last one handled, until closed."""
        from_seq: int | None = None  # None: deliver changes from now on
        failures = 0
        try:
            while not self._closed:
                if failures:  # the server does not answer, or the last consumer failed at once
                    await asyncio.sleep(min(RETRY_DELAY_MAX, 0.05 * 2**failures))
                try:
                    await self._create_consumer(from_seq)
                except nats.errors.ConnectionClosedError as exc:
                    raise WatchClosedError("the NATS connection was closed") from exc
                except Exception as exc:
                    if not ready.done() and not isinstance(exc, TRANSIENT_ERRORS):
                        ready.set_exception(exc)  # e.g. no permission: tell the waiters
                        return
                    failures += 1
                    log.warning("records.watch_create_failed", error=repr(exc), attempt=failures)
                    continue
                if not ready.done():
                    ready.set_result(None)
                else:
                    self._read_all_again()  # anything the consumer may not tell
                began = time.monotonic()
                reason = await self._follow()
                failures = failures + 1 if time.monotonic() - began < 1.0 else 0
                self.replacements += 1
                log.info("records.watch_replaced", reason=reason, after=self._after)
                from_seq = self._after + 1
        except WatchClosedError as exc:
            if not ready.done():
                ready.set_exception(exc)
            self._fail_all(exc)
        except Exception as exc:  # a bug: never leave a waiter waiting for nothing
            log.exception("records.watch_failed")
            error = WatchClosedError(f"the record watch failed: {exc!r}")
            if not ready.done():
                ready.set_exception(error)
            self._fail_all(error)
        finally:
            if not ready.done():  # closed before the first consumer was made
                ready.set_exception(WatchClosedError("the record watch was closed"))
            await self._drop_consumer()

    async def _create_consumer(self, from_seq: int | None) -> None:
        """A new ephemeral pull consumer over the whole bucket (replacing the current one):
        changes from now on (``from_seq`` None), or from the stream sequence ``from_seq``."""
        await self._drop_consumer()
        if from_seq is None:
            await self._broker.instances()  # the bucket exists (created on first use)
        self._reconnects = self._nc.stats["reconnects"]  # a reconnect from now on may lose some
        deliver: dict[str, Any] = (
            {"deliver_policy": "new"} if from_seq is None
            else {"deliver_policy": "by_start_sequence", "opt_start_seq": from_seq}
        )
        # Created by the plain API subject (no name in it), which a viewer is allowed to use.
        created = await self._broker.api(f"CONSUMER.CREATE.{self._stream}", {
            "stream_name": self._stream,
            "config": {
                "filter_subject": self._filter,
                "ack_policy": "none",
                "inactive_threshold": int(WATCH_IDLE * 1_000_000_000),
                "mem_storage": True,
                **deliver,
            },
        })
        self.consumer = str(created["name"])
        delivered = created.get("delivered") or {}
        if from_seq is None:  # a new consumer starts after the stream's last sequence
            self._after = int(delivered.get("stream_seq", 0))
        self._delivered = int(delivered.get("consumer_seq", 0))
        self._generation += 1
        generation = self._generation
        self._inbox = self._nc.new_inbox()
        self._open.clear()

        async def on_message(msg: Msg) -> None:
            if generation == self._generation:
                await self._on_message(msg)

        self._sub = await self._nc.subscribe(f"{self._inbox}.*", cb=on_message)

    async def _drop_consumer(self) -> None:
        """Stop reading the current consumer. It is not deleted (that would take one more
        permission): once our subscription is gone the server drops its pull requests and
        removes the consumer ``WATCH_IDLE`` seconds later."""
        self._generation += 1
        sub, self._sub = self._sub, None
        self.consumer = None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _follow(self) -> str:
        """Read the consumer until it has to be replaced; why."""
        replace: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._replace = replace
        self._last_heard = time.monotonic()
        await self._request_more()
        while True:
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(asyncio.shield(replace), WATCH_CHECK)
            if self._nc.stats["reconnects"] != self._reconnects:
                # Messages sent while the connection was down are lost (nothing acks them).
                return "reconnected"
            if time.monotonic() - self._last_heard > 2 * WATCH_HEARTBEAT:
                if not await self._consumer_exists():
                    return "consumer lost"
                # The consumer is there but forgot our requests (or their answers went
                # astray): ask again. Any message lost meanwhile shows as a sequence gap.
                self._open.clear()
                self._last_heard = time.monotonic()
                await self._request_more()

    def _replace_consumer(self, reason: str) -> None:
        if self._replace is not None and not self._replace.done():
            self._replace.set_result(reason)

    async def _consumer_exists(self) -> bool:
        """Whether the server still has the consumer (no answer in time counts as no)."""
        try:
            reply = await self._nc.request(
                f"$JS.API.CONSUMER.INFO.{self._stream}.{self.consumer}", b"",
                timeout=READ_TIMEOUT,
            )
        except TRANSIENT_ERRORS:
            return False
        return "error" not in json.loads(reply.data)

    async def _request_more(self) -> None:
        """Keep at least half a batch requested."""
        if sum(self._open.values()) >= WATCH_BATCH // 2 or self._closed or self.consumer is None:
            return
        token = str(next(self._tokens))
        self._open[token] = WATCH_BATCH
        request = {
            "batch": WATCH_BATCH,
            "expires": int(WATCH_EXPIRES * 1_000_000_000),
            "idle_heartbeat": int(WATCH_HEARTBEAT * 1_000_000_000),
        }
        try:
            await self._nc.publish(
                f"$JS.API.CONSUMER.MSG.NEXT.{self._stream}.{self.consumer}",
                json.dumps(request).encode(),
                reply=f"{self._inbox}.{token}",
            )
        except Exception:
            self._open.pop(token, None)  # not sent (disconnected): the silence check asks again

    async def _on_message(self, msg: Msg) -> None:
        self._last_heard = time.monotonic()
        headers = msg.headers or {}
        status = headers.get("Status")
        if not status:
            sequence = msg.metadata.sequence
            if sequence.consumer != self._delivered + 1:
                self._replace_consumer(
                    f"messages {self._delivered + 1}-{sequence.consumer - 1} were lost"
                )
                return
            self._delivered = sequence.consumer
            self._after = sequence.stream
            # A message carries its stream subject, not the request's inbox; the server serves
            # requests in the order they came, so it counts against the oldest one.
            oldest = next(iter(self._open), None)
            if oldest is not None:
                if self._open[oldest] > 1:
                    self._open[oldest] -= 1
                else:
                    del self._open[oldest]
            if msg.subject[len(self._key_prefix):] in self._subscribers:
                self._dispatch(_record_entry(msg, self._bucket))
            await self._request_more()
            return
        if status == "100":  # idle heartbeat: the request is alive
            return
        self._open.pop(msg.subject.rsplit(".", 1)[-1], None)
        if status in _REQUEST_ENDED:
            await self._request_more()
            return
        self._replace_consumer(f"pull status {status} {headers.get('Description', '')}".strip())
