"""The activity pipeline: take activity tasks of a task queue, run them, send their results."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine, Generator
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import structlog

from brokers import TRANSIENT_ERRORS, JetStreamBroker, PullStream, WorkMessage
from engine.core.codec import from_json, to_json
from engine.core.errors import ActivityNotRegisteredError, InputDecodeError
from engine.core.events import (
    ActivityTask,
    FailureDetails,
    HistoryEvent,
    TaskCompleted,
    TaskFailed,
    WorkItem,
    decode_activity_task,
    encode,
)
from engine.core.registry import ActivityDefinition, Registry
from engine.core.results import failure_from
from engine.offload import offload, resolve
from engine.worker.cancels import ActivityCancels
from engine.worker.faults import crash_point
from observability import ActivityTrace, publish_span

log = structlog.get_logger("jetloom.runtime")
_activity_log = structlog.get_logger("jetloom.activity")

RESULT_PUBLISH_ATTEMPTS = 100
"""Attempts to publish an activity's result through a fail-over before giving up."""
UNHOSTED_RETRY_DELAY = 2.0
"""Seconds after which a task for an activity this runtime does not host is delivered again
(to a runtime of the same queue that does, if there is one)."""
UNHOSTED_LIMIT = timedelta(minutes=5)
"""How long a task may wait for a runtime that hosts its activity: a task older than this
that reaches a runtime which does not host it is dead-lettered, and the attempt fails."""


class ActivityContext:
    """What an activity function receives as ``ctx``."""

    def __init__(
        self, task: ActivityTask, msg: WorkMessage | None, *, task_queue: str = "default"
    ) -> None:
        self._task = task
        self._msg = msg
        self._task_queue = task_queue
        self._logger: Any = None
        self._cancelled = [False]
        """Set (from the event loop) when the activity is to stop."""
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None

    @property
    def logger(self) -> Any:
        """Structured logger bound to the activity (made on first use)."""
        if self._logger is None:
            self._logger = structlog.get_logger("jetloom.activity").bind(
                instance_id=self._task.instance_id, activity=self._task.name,
                attempt=self._task.attempt,
            )
        return self._logger

    @property
    def workflow_id(self) -> str:
        """The calling workflow's instance id."""
        return self._task.instance_id

    @property
    def workflow_name(self) -> str:
        """The calling workflow's name."""
        return self._task.workflow_name

    @property
    def activity_name(self) -> str:
        """This activity's registered name."""
        return self._task.name

    @property
    def task_queue(self) -> str:
        """The task queue this attempt was taken from (one runtime may serve several)."""
        return self._task_queue

    @property
    def task_id(self) -> int:
        """The id of this attempt's task in the workflow's history."""
        return self._task.task_id

    @property
    def task_execution_id(self) -> str:
        """Stable across retries and redeliveries: the idempotency key for side effects."""
        return self._task.task_execution_id

    @property
    def attempt(self) -> int:
        """1 for the first attempt, 2 for the first retry, ..."""
        return self._task.attempt

    @property
    def propagated_history(self) -> Any:
        """What the calling workflow passed as ``propagated_history`` to ``call_activity``
        (the decoded JSON value), or None."""
        return from_json(self._task.propagated)

    @property
    def is_cancelled(self) -> bool:
        """True once the workflow cancelled this activity or was terminated: stop, and
        return (whatever is returned is dropped). Meant for plain ``def`` activities; an
        ``async def`` one gets ``asyncio.CancelledError`` at its next ``await``."""
        return self._cancelled[0]

    def heartbeat(self) -> Awaitable[None]:
        """Extend this activity's lease so it is not redelivered to another worker.

        ``await ctx.heartbeat()`` in an ``async def`` activity; ``ctx.heartbeat()`` in a plain
        ``def`` one (its thread does not wait for the server).

        Raises:
            asyncio.CancelledError: the activity was cancelled (see ``is_cancelled``).
        """
        if self._cancelled[0]:
            raise asyncio.CancelledError(
                f"activity '{self._task.name}' of {self._task.instance_id!r} was cancelled"
            )
        if self._msg is None or self._loop is None:
            return _Done()
        try:
            in_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            in_loop = False
        if in_loop:
            return self._msg.in_progress()
        asyncio.run_coroutine_threadsafe(self._extend_quietly(), self._loop)
        return _Done()

    async def _extend_quietly(self) -> None:
        if self._msg is not None:
            with contextlib.suppress(Exception):
                await self._msg.in_progress()


class _Done:
    """An awaitable that is already done (what ``heartbeat`` returns off the event loop)."""

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield


class ActivityPipeline:
    """Serves the activity consumers of one runtime's task queues.

    The queues share the runtime's limit: each gets its part of ``capacity``. While an
    activity runs, its lease is extended every third of the lease.
    """

    def __init__(
        self,
        broker: JetStreamBroker,
        registry: Registry,
        *,
        capacity: int,
        lease: timedelta,
        confirm_acks: bool,
        spawn: Callable[[Coroutine[Any, Any, None]], None],
    ) -> None:
        self.broker = broker
        self.registry = registry
        self.capacity = capacity
        self.lease = lease
        self.confirm_acks = confirm_acks
        self._spawn = spawn
        self._server_lease = lease.total_seconds()
        self.unhosted_limit = UNHOSTED_LIMIT
        """How long a task waits for a runtime hosting its activity (see ``_not_hosted``)."""
        self.cancels = ActivityCancels(broker)
        self.stopping = False

    async def start(self) -> None:
        """Listen for cancel requests (before the first task is taken)."""
        await self.cancels.start()

    async def stop(self) -> None:
        """Stop listening for cancel requests."""
        await self.cancels.stop()

    async def serve(self, queue: str, queues: int) -> None:
        """Take the activity tasks of ``queue`` (one of ``queues``) until ``stopping``."""
        consumer = self.broker.subjects.activities_consumer(queue)
        capacity = max(1, self.capacity // queues)
        stream = PullStream(self.broker.nc, self.broker.subjects.work_stream, consumer, capacity)
        await stream.start()
        lease_checked = 0.0
        try:
            while not self.stopping:
                if time.monotonic() - lease_checked > 10:
                    # The consumer is shared: another runtime may have set a shorter lease.
                    lease_checked = time.monotonic()
                    with contextlib.suppress(Exception):
                        self._server_lease = await self.broker.ack_wait(consumer)
                for msg in await stream.next_batch(capacity):
                    self._spawn(self._run(msg, stream))
        finally:
            await stream.stop()

    async def _run(self, msg: WorkMessage, stream: PullStream) -> None:
        try:
            await self._execute(msg)
        except Exception as exc:  # never let one message kill the worker
            log.error("activity.internal_error", error=str(exc), subject=msg.subject)
            with contextlib.suppress(Exception):
                await msg.settle(nak_delay=1.0, confirm=self.confirm_acks)
        finally:
            stream.release(1)

    async def _execute(self, msg: WorkMessage) -> None:
        """Run one attempt and send its result; unusable tasks are dead-lettered, tasks of
        activities hosted elsewhere handed back."""
        try:
            task = decode_activity_task(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.error("activity.invalid_task", subject=msg.subject, error=str(exc))
            await self.broker.dead_letter("activity", msg, f"invalid activity task: {exc}")
            await msg.settle(confirm=self.confirm_acks)
            return
        queue = msg.subject.rsplit(".", 1)[-1]
        try:
            definition = self.registry.activity(task.name)
        except ActivityNotRegisteredError as exc:
            await self._not_hosted(msg, task, queue, exc)
            return
        if await self.cancels.cancelled_before_start(task, msg.stream_seq):
            log.info("activity.cancelled_before_start", instance_id=task.instance_id,
                     activity=task.name, task_id=task.task_id)
            await msg.settle(confirm=self.confirm_acks)
            return
        consumer = self.broker.subjects.activities_consumer(queue)
        # observability: the attempt's span, metrics and log context
        with ActivityTrace(task, msg, consumer) as activity_trace:
            event = await self._attempt(definition, task, msg, queue, activity_trace)
            if event is None:  # cancelled: the attempt ends without a result
                await msg.settle(confirm=self.confirm_acks)
                return
            crash_point("activity_before_result")
            await self._send_result(msg, task, event)
            crash_point("activity_before_ack")
            await msg.settle(confirm=self.confirm_acks)

    async def _send_result(self, msg: WorkMessage, task: ActivityTask, event: HistoryEvent) -> None:
        """Publish an attempt's result to the calling instance's inbox (of its application)."""
        item = await offload(
            self.broker.payloads, task.instance_id,
            WorkItem(task.instance_id, [event], task.execution_id),
        )
        inbox = self.broker.subjects.inbox(task.instance_id, task.workflow_app_id)
        with publish_span(inbox, inbox.rsplit(".", 1)[0] + ".*") as trace_headers:
            await self._publish_result(
                msg, inbox, encode(item), f"{task.execution_id}:{task.task_id}:result",
                trace_headers,
            )

    async def _not_hosted(
        self, msg: WorkMessage, task: ActivityTask, queue: str, exc: ActivityNotRegisteredError
    ) -> None:
        """A task for an activity this runtime does not host: handed back, so that a runtime
        of the queue that hosts it can take it, until it is older than ``unhosted_limit``;
        then nobody hosts it: it is dead-lettered and the attempt fails in the workflow."""
        waited = datetime.now(UTC) - msg.stored_at
        if waited < self.unhosted_limit:
            log.warning("activity.not_registered_here", activity=task.name, queue=queue,
                        error=str(exc))
            await msg.settle(nak_delay=UNHOSTED_RETRY_DELAY, confirm=self.confirm_acks)
            return
        reason = (
            f"no runtime serving task queue {queue!r} hosts activity {task.name!r} (handed "
            f"back {msg.num_delivered} times over {int(waited.total_seconds())}s); register "
            "it in a runtime of that queue, or call it with the task queue of one that does"
        )
        log.error("activity.not_hosted", activity=task.name, queue=queue,
                  instance_id=task.instance_id, deliveries=msg.num_delivered, reason=reason)
        await self.broker.dead_letter("activity", msg, reason)
        failed = TaskFailed(
            timestamp=datetime.now(UTC), task_id=task.task_id,
            failure=FailureDetails(type=ActivityNotRegisteredError.__name__, message=reason),
        )
        await self._send_result(msg, task, failed)
        await msg.settle(confirm=self.confirm_acks)

    async def _attempt(
        self,
        definition: ActivityDefinition,
        task: ActivityTask,
        msg: WorkMessage,
        queue: str,
        activity_trace: ActivityTrace,
    ) -> HistoryEvent | None:
        """Call the activity, keeping its lease; its result or failure as a history event
        (None: it was cancelled while it ran)."""
        started = time.monotonic()
        keeper = _LeaseKeeper(msg, self._lease_interval)
        ctx: ActivityContext | None = None
        try:
            task = await resolve(self.broker.payloads, task)
            ctx = ActivityContext(task, msg, task_queue=queue)
            result = await self._call_cancellable(definition, ctx, task)
            if ctx.is_cancelled:
                _activity_log.info(
                    "activity.cancelled", instance_id=task.instance_id, activity=task.name,
                    attempt=task.attempt,
                    duration_ms=round((time.monotonic() - started) * 1000, 2),
                )
                return None
            _activity_log.debug(
                "activity.completed", instance_id=task.instance_id, activity=task.name,
                attempt=task.attempt,
                duration_ms=round((time.monotonic() - started) * 1000, 2),
            )
            return TaskCompleted(
                timestamp=datetime.now(UTC), task_id=task.task_id, result=to_json(result)
            )
        except Exception as exc:
            if ctx is not None and ctx.is_cancelled:
                _activity_log.info("activity.cancelled", instance_id=task.instance_id,
                                   activity=task.name, attempt=task.attempt, error=repr(exc))
                return None
            activity_trace.failed(exc)
            failure = failure_from(exc)
            if isinstance(exc, InputDecodeError):
                failure = msgspec.structs.replace(failure, non_retryable=True)
            _activity_log.warning(
                "activity.failed", instance_id=task.instance_id, activity=task.name,
                attempt=task.attempt, error=str(exc), error_type=type(exc).__name__,
            )
            return TaskFailed(timestamp=datetime.now(UTC), task_id=task.task_id, failure=failure)
        finally:
            keeper.cancel()

    async def _call_cancellable(
        self, definition: ActivityDefinition, ctx: ActivityContext, task: ActivityTask
    ) -> Any:
        """``_call``, stopped if a cancel request for the activity comes meanwhile: an
        ``async def`` activity's task is cancelled (and, once it stopped, un-cancelled: the
        worker's own task goes on to acknowledge the message); a thread sees the flag."""
        current = asyncio.current_task() if definition.is_async else None
        running = self.cancels.register(task, ctx._cancelled, current)
        try:
            if ctx.is_cancelled:
                return None
            return await _call(definition, ctx, task)
        except asyncio.CancelledError:
            if not ctx.is_cancelled:
                raise  # the worker is shutting down
            return None
        finally:
            self.cancels.unregister(task.instance_id, running)
            if running.cancel_sent and current is not None:
                current.uncancel()

    def _lease_interval(self) -> float:
        """Extend a running activity's lease every third of it (the shorter of ours and the
        consumer's, which another runtime may have set)."""
        return max(min(self.lease.total_seconds(), self._server_lease) / 3, 0.2)

    async def _publish_result(
        self, msg: WorkMessage, inbox: str, data: bytes, msg_id: str, headers: dict[str, str]
    ) -> None:
        """Publish an activity's result, retrying through a server fail-over or restart.

        The result is deduplicated by its Nats-Msg-Id, so retrying is safe, and far better
        than running the activity again; the lease is kept while retrying.
        """
        for attempt in range(RESULT_PUBLISH_ATTEMPTS):
            try:
                await self.broker.publish(inbox, data, msg_id=msg_id, headers=headers)
                return
            except TRANSIENT_ERRORS as exc:
                if attempt == RESULT_PUBLISH_ATTEMPTS - 1:
                    raise
                log.warning("activity.result_publish_retry", attempt=attempt, error=repr(exc))
                with contextlib.suppress(Exception):
                    await msg.in_progress()
                await asyncio.sleep(min(0.1 * 2**attempt, 2.0))


async def _call(definition: ActivityDefinition, ctx: ActivityContext, task: ActivityTask) -> Any:
    """Call the activity function (a plain ``def`` in a thread) within its timeout."""
    sig = definition.signature
    args: tuple[Any, ...] = (ctx,)
    if sig.takes_input:
        args = (
            ctx,
            sig.input_of(task.input, what=f"input of activity '{task.name}'"),
        )
    timeout = task.start_to_close_timeout
    call = (
        definition.fn(*args) if definition.is_async else asyncio.to_thread(definition.fn, *args)
    )
    if timeout is None:
        return await call
    try:
        return await asyncio.wait_for(call, timeout)
    except TimeoutError:
        raise TimeoutError(
            f"activity '{task.name}' exceeded its start_to_close_timeout of {timeout}s"
        ) from None


class _LeaseKeeper:
    """Sends ``in_progress`` for a message at intervals until cancelled (a timer, not a task:
    most activities end long before the first extension)."""

    def __init__(self, msg: WorkMessage, interval: Callable[[], float]) -> None:
        self._msg = msg
        self._interval = interval
        self._loop = asyncio.get_running_loop()
        self._extending: asyncio.Task[None] | None = None
        self._timer = self._loop.call_later(interval(), self._extend)

    def _extend(self) -> None:
        self._extending = self._loop.create_task(self._in_progress())
        self._timer = self._loop.call_later(self._interval(), self._extend)

    async def _in_progress(self) -> None:
        with contextlib.suppress(Exception):
            await self._msg.in_progress()

    def cancel(self) -> None:
        """Stop extending."""
        self._timer.cancel()
        if self._extending is not None:
            self._extending.cancel()
