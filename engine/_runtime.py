"""WorkflowRuntime: the worker that runs workflow tasks and activities from JetStream."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, overload

import msgspec
import nats.errors
import nats.js.errors
import structlog
from nats.aio.msg import Msg

from brokers import AppendConflictError, DispatchMessage, JetStreamBroker, Subjects, connect_nats
from brokers._errors import TRANSIENT_ERRORS as BROKER_TRANSIENT_ERRORS
from brokers._heartbeat import WorkerHeartbeat
from brokers._payloads import DEFAULT_THRESHOLD, MIN_THRESHOLD
from brokers._pull import PullStream, settle
from brokers._sourcing import watch_sourcing
from engine._dispatch import Dispatcher, still_open
from engine._errors import (
    ActivityNotRegisteredError,
    InputDecodeError,
    InvalidInstanceIdError,
    WorkflowNotRegisteredError,
)
from engine._events import (
    NULL,
    ActivityTask,
    ChildWorkflowScheduled,
    ExecutionCompleted,
    ExecutionStarted,
    ExecutionTerminated,
    HistoryEvent,
    TaskCommit,
    TaskCompleted,
    TaskFailed,
    WorkflowTaskStarted,
    WorkItem,
    decode_activity_task,
    decode_commit,
    decode_start_request,
    decode_work_item,
    encode,
    history_events,
)
from engine._executor import (
    COMPLETED,
    FAILED,
    TERMINATED,
    TaskResult,
    WorkflowExecution,
    failure_from,
)
from engine._faults import crash_point
from engine._ids import check_instance_id, instance_id_for_message
from engine._large_payloads import offload, offload_all, resolve, resolve_all, stored_names
from engine._payload import from_json, to_json
from engine._registry import Registry
from engine._state import (
    InstanceRecord,
    WorkflowStatus,
    decode_record,
    encode_record,
    history_seq_of,
    run_seq_of,
)
from observability import (
    ActivityTrace,
    WorkflowTaskTrace,
    configure_logging,
    dispatch_trace_headers,
    publish_span,
    watch_consumers,
)

F = TypeVar("F", bound=Callable[..., Any])

log = structlog.get_logger("jetloom.runtime")
_activity_log = structlog.get_logger("jetloom.activity")

TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    *BROKER_TRANSIENT_ERRORS,
    nats.errors.ConnectionClosedError,
)
"""Errors of the messaging layer, not of the workflow: retried without marking it STALLED."""
COMMIT_HEADROOM = 8 * 1024
"""Bytes of a history message kept free under the server's max payload for its headers."""
START_WAIT = 0.2
"""Seconds after which events that overtook their instance's start are delivered again."""
START_WAIT_DELIVERIES = 50
"""Deliveries after which such events are dead-lettered (the start never came)."""


class ActivityContext:
    """What an activity function receives as ``ctx``."""

    def __init__(self, task: ActivityTask, msg: Msg | None) -> None:
        self._task = task
        self._msg = msg
        self._logger: Any = None

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

    async def heartbeat(self) -> None:
        """Extend this activity's lease so it is not redelivered to another worker."""
        if self._msg is not None:
            await self._msg.in_progress()


@dataclass
class _CachedRun:
    """The current run as this worker last saw it.

    ``execution`` is the live workflow (its coroutine suspended where the last task left it),
    so the next task feeds it only the new events instead of replaying the whole history.
    """

    events: list[HistoryEvent]
    last_seq: int
    execution: WorkflowExecution | None = None
    projected: tuple[Any, ...] | None = None
    """The visible fields of the KV record this worker wrote last."""
    kv_revision: int | None = None
    """That record's KV revision."""
    children: list[str] | None = None
    """Instance ids of the child workflows this run scheduled (None: not counted yet)."""

    def children_after(self, new_events: list[HistoryEvent]) -> list[str]:
        """The run's child workflows once ``new_events`` are appended (without rescanning
        the whole history when they are already counted)."""
        if self.children is None:
            self.children = _scheduled_children(self.events)
        return self.children + _scheduled_children(new_events)


class WorkflowRuntime:
    """Hosts workflows and/or activities and runs them from JetStream.

    Many processes may host the same workflows and activities: they share durable consumers and
    compete for work. Limits hold per runtime: it never holds more unfinished workflow tasks or
    activities than ``max_concurrent_workflow_tasks`` / ``max_concurrent_activities``.
    """

    def __init__(
        self,
        nats_url: str | None = None,
        *,
        max_concurrent_workflow_tasks: int = 100,
        max_concurrent_activities: int = 100,
        task_queues: list[str] | None = None,
        prefix: str | None = None,
        activity_lease: timedelta = timedelta(seconds=30),
        workflow_task_lease: timedelta = timedelta(seconds=30),
        replicas: int = 1,
        history_cache_size: int = 10_000,
        stall_retry_max: timedelta = timedelta(seconds=30),
        connect_options: dict[str, Any] | None = None,
        large_payload_threshold: int = DEFAULT_THRESHOLD,
    ) -> None:
        """Configure a runtime; nothing connects until ``start()``.

        Args:
            nats_url: server URL(s), comma separated; default NATS_URL, then 127.0.0.1:4222.
            max_concurrent_workflow_tasks: workflow work items held at once.
            max_concurrent_activities: activities running at once.
            task_queues: activity task queues served (default ``["default"]``).
            prefix: namespace of subjects, streams and buckets (default JETLOOM_PREFIX, then
                ``jetloom``).
            activity_lease: how long a running activity's message stays with this worker
                without a heartbeat (the runtime heartbeats while the activity runs).
            workflow_task_lease: how long a workflow work item stays with a worker that took
                it; after a crash, another worker gets it once this has passed.
            replicas: stream replicas (3 on a cluster).
            history_cache_size: instances whose history is kept in memory between tasks.
            stall_retry_max: longest wait before a failing workflow task is retried.
            connect_options: extra ``nats.connect`` options, e.g. credentials and TLS from
                ``brokers.NatsAuth(...).connect_options()`` (else NATS_CREDS, NATS_CA, ...).
            large_payload_threshold: inputs, outputs and event data whose JSON is larger than
                this many bytes are kept in the Object Store bucket ``<prefix>_payloads`` and
                referenced from history (default 256 KiB; at least 1 KiB).
        """
        if max_concurrent_workflow_tasks < 1 or max_concurrent_activities < 1:
            raise ValueError("concurrency limits must be at least 1")
        if large_payload_threshold < MIN_THRESHOLD:
            raise ValueError(
                f"large_payload_threshold must be at least {MIN_THRESHOLD} bytes, "
                f"got {large_payload_threshold}"
            )
        self.large_payload_threshold = large_payload_threshold
        self.nats_url = nats_url
        self.max_concurrent_workflow_tasks = max_concurrent_workflow_tasks
        self.max_concurrent_activities = max_concurrent_activities
        self.task_queues = list(task_queues or ["default"])
        self.subjects = Subjects(prefix or os.environ.get("JETLOOM_PREFIX") or "jetloom")
        self.activity_lease = activity_lease
        self.workflow_task_lease = workflow_task_lease
        self.replicas = replicas
        self.stall_retry_max = stall_retry_max
        self.connect_options = dict(connect_options or {})
        self.registry = Registry()
        self._cache: OrderedDict[str, _CachedRun] = OrderedDict()
        self._cache_size = history_cache_size
        self._broker: JetStreamBroker | None = None
        self._dispatcher = Dispatcher(self.subjects, "24h")
        self._loops: list[asyncio.Task[None]] = []
        self._inflight: set[asyncio.Task[Any]] = set()
        self._busy: dict[str, list[Msg]] = {}
        """Instances with a workflow task running here, and the messages waiting for it."""
        self._wf_slots = 0  # work messages held (being processed or waiting for a lock)
        self._act_slots = 0  # activities running
        self._wf_stream: PullStream | None = None
        self._stopping = False
        self._started = False
        self._confirm_acks = True
        self._server_lease = activity_lease.total_seconds()

    # ------------------------------------------------------------ registration

    def register_workflow(self, fn: F, *, name: str | None = None) -> F:
        """Host ``fn`` as a workflow (name defaults to the function's name)."""
        definition = self.registry.add_workflow(fn, name=name)
        fn.__jetloom_name__ = definition.name  # type: ignore[attr-defined]
        return fn

    def register_activity(
        self, fn: F, *, name: str | None = None, start_to_close_timeout: timedelta | None = None
    ) -> F:
        """Host ``fn`` as an activity (plain ``def`` runs in a thread pool)."""
        definition = self.registry.add_activity(
            fn, name=name, start_to_close_timeout=start_to_close_timeout
        )
        fn.__jetloom_name__ = definition.name  # type: ignore[attr-defined]
        return fn

    @overload
    def workflow(self, fn: F, *, name: str | None = None) -> F: ...

    @overload
    def workflow(self, fn: None = None, *, name: str | None = None) -> Callable[[F], F]: ...

    def workflow(
        self, fn: F | None = None, *, name: str | None = None
    ) -> F | Callable[[F], F]:
        """Decorator: ``@wfr.workflow`` or ``@wfr.workflow(name="...")``."""
        if fn is not None:
            return self.register_workflow(fn, name=name)

        def register(f: F) -> F:
            return self.register_workflow(f, name=name)

        return register

    @overload
    def activity(
        self, fn: F, *, name: str | None = None, start_to_close_timeout: timedelta | None = None
    ) -> F: ...

    @overload
    def activity(
        self,
        fn: None = None,
        *,
        name: str | None = None,
        start_to_close_timeout: timedelta | None = None,
    ) -> Callable[[F], F]: ...

    def activity(
        self,
        fn: F | None = None,
        *,
        name: str | None = None,
        start_to_close_timeout: timedelta | None = None,
    ) -> F | Callable[[F], F]:
        """Decorator: ``@wfr.activity`` or ``@wfr.activity(name=..., start_to_close_timeout=...)``.

        The timeout limits one attempt unless the call sets its own.
        """
        if fn is not None:
            return self.register_activity(
                fn, name=name, start_to_close_timeout=start_to_close_timeout
            )

        def register(f: F) -> F:
            return self.register_activity(
                f, name=name, start_to_close_timeout=start_to_close_timeout
            )

        return register

    def versioned_workflow(self, *, name: str, is_latest: bool = False) -> Callable[[F], F]:
        """Decorator registering one version (the function's name) of workflow ``name``.

        New instances run the latest version; a running instance keeps the version it started
        with, recorded in its history.
        """

        def register(fn: F) -> F:
            self.registry.add_workflow(fn, name=name, version=fn.__name__, is_latest=is_latest)
            fn.__jetloom_name__ = name  # type: ignore[attr-defined]
            return fn

        return register

    # --------------------------------------------------------------- lifecycle

    @property
    def broker(self) -> JetStreamBroker:
        """The JetStream binding (after start)."""
        if self._broker is None:
            raise RuntimeError("the runtime is not started: call 'await runtime.start()'")
        return self._broker

    async def start(self) -> None:
        """Connect, create the streams if needed and start taking work."""
        if self._started:
            return
        _tune_gc()
        if not structlog.is_configured():
            # structlog's own default prints every level; a worker logs at INFO (or
            # JETLOOM_LOG_LEVEL) unless the process configured logging itself.
            configure_logging(level=os.environ.get("JETLOOM_LOG_LEVEL", "INFO"))
        nc = await connect_nats(self.nats_url, **self.connect_options)
        self._broker = JetStreamBroker(
            nc, self.subjects, replicas=self.replicas,
            large_payload_threshold=self.large_payload_threshold,
        )
        self._dispatcher = Dispatcher(self.subjects, self._broker.outbox_ttl)
        await self._broker.ensure_topology()
        # Acknowledgements are confirmed only where a consumer leader can change under a live
        # connection (see brokers._pull.settle).
        work_stream = await self._broker.work_stream_layout()
        self._confirm_acks = work_stream.replicas > 1
        s = self.subjects
        if self.registry.workflow_names:
            await self._broker.ensure_consumer(
                s.workflows_consumer,
                work_stream.workflow_filters,
                ack_wait=self.workflow_task_lease.total_seconds(),
                max_ack_pending=100_000,
            )
            self._loops.append(asyncio.create_task(self._workflow_loop()))
        if self.registry.activity_names:
            for queue in self.task_queues:
                await self._broker.ensure_consumer(
                    s.activities_consumer(queue),
                    [s.outbox_activity(queue)],
                    ack_wait=self.activity_lease.total_seconds(),
                    max_ack_pending=100_000,
                )
                self._loops.append(asyncio.create_task(self._activity_loop(queue)))
        # On a cluster, restart a stalled source of dispatches (see brokers._sourcing).
        self._loops.append(asyncio.create_task(
            watch_sourcing(self._broker.api, s.work_stream, s.history_stream)
        ))
        # observability: backlog gauges (returns at once unless metrics are configured)
        watched = [s.activities_consumer(q) for q in self.task_queues] if (
            self.registry.activity_names
        ) else []
        if self.registry.workflow_names:
            watched.append(s.workflows_consumer)
        self._loops.append(asyncio.create_task(watch_consumers(
            lambda c: self.broker.js.consumer_info(s.work_stream, c), s.work_stream, watched
        )))
        self._loops.append(asyncio.create_task(WorkerHeartbeat(  # who is alive: <p>_workers
            self._broker, workflows=self.registry.workflow_names,
            activities=self.registry.activity_names, task_queues=self.task_queues,
        ).run()))
        self._started = True
        log.info(
            "runtime.started",
            workflows=self.registry.workflow_names,
            activities=self.registry.activity_names,
            task_queues=self.task_queues,
        )

    async def shutdown(self, timeout: float = 30.0) -> None:
        """Stop taking work, let in-flight work finish (up to ``timeout``), disconnect."""
        if not self._started:
            return
        self._stopping = True
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        if self._inflight:
            await asyncio.wait(self._inflight, timeout=timeout)
        if self._broker is not None:
            with contextlib.suppress(Exception):
                await self._broker.nc.flush(timeout=5)
            with contextlib.suppress(Exception):
                await self._broker.nc.close()
        self._started = False
        log.info("runtime.stopped")

    async def run(self) -> None:
        """Start, then serve until cancelled, SIGTERM or SIGINT; shut down gracefully."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        try:
            await self.start()
            await stop.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
            await self.shutdown()

    async def __aenter__(self) -> WorkflowRuntime:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    # ----------------------------------------------------------- workflow side

    async def _workflow_loop(self) -> None:
        stream = PullStream(
            self.broker.nc,
            self.subjects.work_stream,
            self.subjects.workflows_consumer,
            self.max_concurrent_workflow_tasks,
        )
        self._wf_stream = stream
        await stream.start()
        try:
            while not self._stopping:
                msgs = await stream.next_batch(self.max_concurrent_workflow_tasks)
                groups: dict[str, list[Msg]] = {}
                for msg in msgs:
                    try:
                        instance_id = await self._instance_of(msg)
                    except Exception as exc:
                        # e.g. the dead-letter stream has no leader right now: the message
                        # comes back later; the loop must go on serving everyone else.
                        log.error("work_item.dead_letter_failed", subject=msg.subject,
                                  error=repr(exc))
                        self._spawn(self._give_back(msg, stream, delay=1.0))
                        continue
                    if instance_id is None:
                        stream.release(1)  # dead-lettered and acknowledged
                    else:
                        groups.setdefault(instance_id, []).append(msg)
                for instance_id, group in groups.items():
                    self._wf_slots += len(group)
                    waiting = self._busy.get(instance_id)
                    if waiting is not None:
                        waiting.extend(group)  # the instance's running task takes them next
                    else:
                        self._busy[instance_id] = []
                        self._spawn(self._process_instance(instance_id, group))
        finally:
            await stream.stop()

    async def _give_back(self, msg: Msg, stream: PullStream, *, delay: float) -> None:
        """Ask for ``msg`` again after ``delay`` seconds and free its slot."""
        try:
            with contextlib.suppress(Exception):
                await self._settle(msg, nak_delay=delay)
        finally:
            stream.release(1)

    async def _instance_of(self, msg: Msg) -> str | None:
        """The instance a work message is for; bad start events go to the dead-letter stream."""
        s = self.subjects
        if not msg.subject.startswith(f"{s.prefix}.start."):
            try:
                decode_work_item(msg.data)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                why = f"work item is not a valid WorkItem: {exc}"
                log.warning("work_item.dead_lettered", subject=msg.subject, reason=why)
                await self.broker.dead_letter("inbox", msg, why)
                await self._settle(msg)
                return None
            return s.instance_of(msg.subject)
        workflow_name = msg.subject.rsplit(".", 1)[-1]
        reason: str | None = None
        try:
            request = decode_start_request(msg.data)
            instance_id = request.instance_id or self._generated_instance_id(msg)
            check_instance_id(instance_id)
            self.registry.workflow(workflow_name)
        except msgspec.ValidationError as exc:  # a DecodeError subclass: must come first
            reason = (
                f"start event has the wrong shape ({exc}); expected "
                '{"instance_id": "<optional id>", "input": <any JSON>}'
            )
        except msgspec.DecodeError as exc:
            reason = f"start event is not valid JSON: {exc}"
        except (InvalidInstanceIdError, WorkflowNotRegisteredError) as exc:
            reason = str(exc)
        if reason is None:
            return instance_id
        log.warning("start.dead_lettered", subject=msg.subject, reason=reason)
        await self.broker.dead_letter("start", msg, reason)
        await self._settle(msg)
        return None

    def _generated_instance_id(self, msg: Msg) -> str:
        """The id of a start event without one: stable across redeliveries and, when the
        publisher sets Nats-Msg-Id, across its retries too."""
        msg_id = (msg.headers or {}).get("Nats-Msg-Id")
        if msg_id:
            return instance_id_for_message("msg-id", msg_id)
        return instance_id_for_message(self.subjects.work_stream, msg.metadata.sequence.stream)

    async def _process_instance(self, instance_id: str, msgs: list[Msg]) -> None:
        """Run workflow tasks for an instance until no more work waits for it.

        Messages that arrive while a task of the instance runs wait in ``_busy`` and make up
        the next task, so a process never runs two tasks of one instance at once.
        """
        try:
            while msgs:
                try:
                    await self._run_workflow_task_with_retries(instance_id, msgs)
                except Exception as exc:  # never let one instance's trouble stop the worker
                    log.error("workflow.internal_error", instance_id=instance_id,
                              error=repr(exc))
                    await self._settle_all(msgs, nak_delay=1.0)
                finally:
                    self._wf_slots -= len(msgs)
                    if self._wf_stream is not None:
                        self._wf_stream.release(len(msgs))
                msgs = self._busy.get(instance_id) or []
                self._busy[instance_id] = []
        finally:
            self._busy.pop(instance_id, None)

    async def _run_workflow_task_with_retries(self, instance_id: str, msgs: list[Msg]) -> None:
        for attempt in range(8):
            try:
                with WorkflowTaskTrace(
                    instance_id, msgs, self.subjects.workflows_consumer
                ) as task_trace:  # observability: span, metrics, log context of this task
                    delay = await self._workflow_task(
                        instance_id, msgs, task_trace, may_skip_read=attempt == 0
                    )
            except AppendConflictError as conflict:
                # Another worker advanced this instance: reload its history and try again.
                self._cache.pop(instance_id, None)
                log.debug("workflow.append_conflict", instance_id=instance_id, attempt=attempt,
                          detail=str(conflict))
                continue
            except TRANSIENT_ERRORS as exc:
                # The server is failing over or restarting: not the workflow's fault, so no
                # STALLED status and no growing back-off; try again shortly.
                self._cache.pop(instance_id, None)
                log.warning("workflow.transient_error", instance_id=instance_id,
                            error=repr(exc))
                await self._settle_all(msgs, nak_delay=0.5)
                return
            except nats.errors.MaxPayloadError as exc:
                self._cache.pop(instance_id, None)
                if await self._dead_letter_oversized_start(instance_id, msgs, exc):
                    return
                await self._stall(instance_id, msgs, exc)
                return
            except Exception as exc:
                self._cache.pop(instance_id, None)
                await self._stall(instance_id, msgs, exc)
                return
            crash_point("before_ack")
            await self._settle_all(msgs, nak_delay=delay)
            return
        self._cache.pop(instance_id, None)
        await self._settle_all(msgs, nak_delay=0.05)

    async def _dead_letter_oversized_start(
        self, instance_id: str, msgs: list[Msg], exc: Exception
    ) -> bool:
        """A start whose first history append exceeds the server's max payload can never run:
        dead-letter it (with the reason) instead of retrying forever."""
        if self._cache.get(instance_id) is None and (await self.broker.last_history_seq(
            instance_id
        ))[0]:
            return False  # the instance exists: a later task grew too large (stall, visible)
        starts = [m for m in msgs if m.subject.startswith(f"{self.subjects.prefix}.start.")]
        if not starts:
            return False
        reason = (
            f"the start of {instance_id!r} does not fit the server's max payload ({exc}); "
            "send a smaller input"
        )
        log.warning("start.dead_lettered", instance_id=instance_id, reason=reason)
        for msg in starts:
            await self.broker.dead_letter("start", msg, reason)
        for msg in msgs:
            await self._settle(msg)
        return True

    async def _stall(self, instance_id: str, msgs: list[Msg], exc: Exception) -> None:
        """A workflow task failed: show the instance as STALLED and retry later with back-off."""
        deliveries = max(m.metadata.num_delivered or 1 for m in msgs)
        delay = min(0.5 * 2 ** (deliveries - 1), self.stall_retry_max.total_seconds())
        log.error(
            "workflow.task_failed",
            instance_id=instance_id,
            error=str(exc),
            error_type=type(exc).__name__,
            retry_in_s=delay,
        )
        with contextlib.suppress(Exception):
            await self._project_stalled(instance_id, exc)
        await self._settle_all(msgs, nak_delay=delay)

    async def _project_stalled(self, instance_id: str, exc: Exception) -> None:
        current = await self.broker.get_record(instance_id)
        if current is None:
            return
        record = decode_record(current[0])
        if WorkflowStatus(record.status).is_terminal:
            return
        record.status = WorkflowStatus.STALLED.value
        record.failure = failure_from(exc)
        record.last_updated_at = datetime.now(UTC)
        await self.broker.put_record(
            instance_id, encode_record(record), record.history_seq, history_seq_of,
            revision=current[1],
        )

    async def _history(self, instance_id: str) -> _CachedRun:
        cached = self._cache.get(instance_id)
        if cached is not None:
            self._cache.move_to_end(instance_id)
            return cached
        stored = await self.broker.load_history(instance_id)
        events = await resolve_all(
            self.broker.payloads, history_events(item.data for item in stored)
        )
        run_start = max(
            (i for i, e in enumerate(events) if isinstance(e, ExecutionStarted)), default=0
        )
        run = _CachedRun(events[run_start:], stored[-1].seq if stored else 0)
        self._remember(instance_id, run)
        return run

    def _remember(self, instance_id: str, run: _CachedRun) -> None:
        self._cache[instance_id] = run
        self._cache.move_to_end(instance_id)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    async def _workflow_task(
        self,
        instance_id: str,
        msgs: list[Msg],
        task_trace: WorkflowTaskTrace | None = None,
        *,
        may_skip_read: bool = False,
    ) -> float | None:
        """Run one workflow task for ``instance_id`` with the events in ``msgs``.

        ``task_trace`` (observability) is told when the run is known, replayed and committed.

        Returns None when the messages can be acknowledged, or a delay after which they
        should be delivered again (a scheduled start that is not due yet).
        """
        if any((m.metadata.num_delivered or 1) > 1 for m in msgs):
            await self._resend_committed(instance_id, msgs)
        parsed = [self._events_of(instance_id, msg, datetime.now(UTC)) for msg in msgs]
        from_cache = instance_id in self._cache
        if may_skip_read and not from_cache and self._only_fresh_starts(msgs, parsed):
            # No history can exist yet (the id was derived from this very message, or the
            # client found none), unless the start is delivered again after its append or the
            # id was started meanwhile: then the append conflicts and the retry reads it.
            run = _CachedRun([], 0)
        else:
            run = await self._history(instance_id)
        # The task's time is taken after the read: a read that waited (a fail-over) may return
        # tasks other workers committed meanwhile, and the workflow's time must not go back.
        now = datetime.now(UTC)
        started: ExecutionStarted | None = None
        start_after = 0
        received: list[tuple[HistoryEvent, str]] = []
        for new_start, events, run_id, after_seq in parsed:
            events = await resolve_all(self.broker.payloads, events)
            if new_start is not None:
                new_start = await resolve(self.broker.payloads, new_start)
                if started is None:
                    started, start_after = new_start, after_seq
                else:
                    log.info("start.duplicate_ignored", instance_id=instance_id)
            received.extend((event, run_id) for event in events)
        if run.events and self._is_stale(run, received):
            # A client started a new run since this worker cached the old one.
            self._cache.pop(instance_id, None)
            run = await self._history(instance_id)
            from_cache = False
        old_run_end = 0
        if started is not None and run.events:
            if start_after and start_after == run.last_seq and _is_finished(run.events):
                # A client's new run of a finished instance: it replaces the old run, whose
                # history is dropped once the new one is appended.
                old_run_end = run.last_seq
                run = _CachedRun([], run.last_seq)
            else:
                log.info("start.duplicate_ignored", instance_id=instance_id)
                started = None

        history = list(run.events)
        prefix_events: list[HistoryEvent] = []
        if not history:
            if started is None:
                pending = await self._pending_record(instance_id)
                if pending is not None:
                    if max(m.metadata.num_delivered for m in msgs) < START_WAIT_DELIVERIES:
                        # Events that overtook their instance's start (raised right after a
                        # client start, before it reached the work stream): deliver them again.
                        log.info("work_item.waiting_for_start", instance_id=instance_id)
                        return START_WAIT
                    await self._terminate_unstarted(
                        instance_id, pending, [e for e, _ in received]
                    )
                reason = f"no instance {instance_id!r}: nothing to deliver the events to"
                log.warning("work_item.dead_lettered", instance_id=instance_id, reason=reason)
                for msg in msgs:
                    await self.broker.dead_letter("inbox", msg, reason)
                return None
            history = [started]
            prefix_events = [started]
        execution_id = history[0].execution_id  # type: ignore[union-attr]
        # Events sent to an earlier run of this instance id are stale.
        incoming = [e for e, run_id in received if run_id in ("", execution_id)]
        first = history[0]
        assert isinstance(first, ExecutionStarted)
        if first.scheduled_start_at and first.scheduled_start_at > now and len(history) == 1:
            return max(0.05, (first.scheduled_start_at - now).total_seconds())

        history, pinned_version = self._pin_version(history)
        execution = run.execution
        from_cache = execution is not None and execution.history_length == len(history)
        if execution is None or execution.history_length != len(history):
            execution = WorkflowExecution(self.registry, instance_id, history)
        if task_trace is not None:  # observability: opens the workflow task span
            task_trace.begin(first, history, from_cache=from_cache)
        # From here the live execution is ahead of the stored history until the append commits.
        run.execution = None
        if execution.is_complete:
            if incoming:
                log.info(
                    "workflow.events_after_completion_dropped",
                    instance_id=instance_id,
                    events=len(incoming),
                )
            # The record may have missed the end (a crash or fail-over right after the append).
            final = TaskResult(
                new_events=[],
                status=execution.status,
                output=execution.output,
                failure=execution.failure,
                custom_status=None
                if execution.custom_status is None
                else to_json(execution.custom_status),
            )
            await self._project(instance_id, first, final, _scheduled_children(history),
                                run.last_seq, now, [], run)
            return None
        result = execution.run_task(incoming, now)
        if task_trace is not None:  # observability
            task_trace.replayed(result, incoming=len(incoming))
        if pinned_version is not None:
            first_task = result.new_events[0]
            assert isinstance(first_task, WorkflowTaskStarted)
            result.new_events[0] = msgspec.structs.replace(first_task, version=pinned_version)
        if self._changes_nothing(result, history, prefix_events, pinned_version):
            if from_cache and incoming:
                # The cached view may predate tasks another worker appended, whose results
                # it cannot recognise: only a fresh read may call these events duplicates.
                raise AppendConflictError("events unknown to the cached history")
            # Only duplicates or stale events came in (e.g. a redelivery after a lost ack):
            # append nothing, but re-write the projection in case that was what was lost.
            self._cache.pop(instance_id, None)
            await self._project(instance_id, first, result, _scheduled_children(history),
                                run.last_seq, now, [])
            return None
        # What is written carries references in place of payloads over the size threshold.
        payloads = self.broker.payloads
        stored_events = await offload_all(payloads, instance_id, result.new_events)
        next_run: list[HistoryEvent] = []
        if result.continue_as_new is not None:
            next_run = [result.continue_as_new, *result.carried_events]
        appended = [
            *await offload_all(payloads, instance_id, prefix_events),
            *stored_events,
            *await offload_all(payloads, instance_id, next_run),
        ]
        dispatches = self._dispatcher.for_task(
            instance_id, history if not prefix_events else [], appended,
            dispatch_trace_headers(first),
        )
        history_subject = self.subjects.history(instance_id)
        messages = self._commit_messages(appended, [m.metadata.sequence.stream for m in msgs])
        with publish_span(  # observability: the task's history append as one PRODUCER span
            history_subject,
            history_subject.rsplit(".", 1)[0] + ".*",
            message_count=len(messages) + len(dispatches),
        ):
            last_seq = await self.broker.commit(instance_id, run.last_seq, messages)
        if task_trace is not None:  # observability: counts starts/ends, emits the run's span
            task_trace.committed(result, instance_id)
        crash_point("after_append")
        children = run.children_after(result.new_events)
        if next_run:
            cached = _CachedRun(next_run, last_seq)
        else:
            cached = _CachedRun(
                history + result.new_events, last_seq, execution,
                projected=run.projected, kv_revision=run.kv_revision, children=children,
            )
        self._remember(instance_id, cached)
        # The task is durable: its dispatches and the instance's record go out together.
        await asyncio.gather(
            self.broker.send_dispatches(dispatches),
            self._project(instance_id, first, result, children, last_seq, now, next_run, cached),
        )
        if old_run_end:  # the old run's history goes (a failure here only leaves it longer)
            with contextlib.suppress(Exception):
                await self.broker.compact_history(instance_id, old_run_end + 1)
        if next_run:
            with contextlib.suppress(Exception):
                # The new run starts in this task's first message.
                await self.broker.compact_history(instance_id, last_seq - len(messages) + 1)
                # The old run's payloads went with its history (those the new run still uses
                # stay).
                await payloads.delete(
                    stored_names(payloads, instance_id, history + result.new_events)
                    - stored_names(payloads, instance_id, next_run)
                )
        if not next_run and result.status in (COMPLETED, FAILED, TERMINATED):
            self._cache.pop(instance_id, None)  # a finished run takes no more tasks
            _log_end(log, instance_id, first.name, result)
        return None

    def _pin_version(
        self, history: list[HistoryEvent]
    ) -> tuple[list[HistoryEvent], str | None]:
        """Resolve the version of a run whose start event named none (a client start).

        The first workflow task records the version it chose; later tasks reuse it. Returns the
        history to replay and the version to record (None if already recorded).
        """
        first = history[0]
        assert isinstance(first, ExecutionStarted)
        if first.version or not self.registry.has_workflow(first.name):
            return history, None
        recorded = next((e.version for e in history if isinstance(e, WorkflowTaskStarted)), None)
        version = recorded if recorded is not None else self.registry.workflow(first.name).version
        pinned = [msgspec.structs.replace(first, version=version), *history[1:]]
        return pinned, (version if recorded is None else None)

    @staticmethod
    def _changes_nothing(
        result: TaskResult,
        history: list[HistoryEvent],
        prefix_events: list[HistoryEvent],
        pinned_version: str | None,
    ) -> bool:
        """True if the task's only new event would be its own WorkflowTaskStarted."""
        if prefix_events or pinned_version is not None or len(result.new_events) != 1:
            return False
        task_started = result.new_events[0]
        assert isinstance(task_started, WorkflowTaskStarted)
        ran_before = any(isinstance(e, WorkflowTaskStarted) for e in history)
        return ran_before and not task_started.patches

    def _only_fresh_starts(
        self, msgs: list[Msg], parsed: list[tuple[ExecutionStarted | None, list[HistoryEvent],
                                                  str, int]]
    ) -> bool:
        """True if every message starts a run of an id that had no history when it was sent:
        a start event without an instance id of its own, or a start work item decided on an
        empty history (``after_seq`` 0)."""
        start = f"{self.subjects.prefix}.start."
        for msg, (new_start, events, _, after_seq) in zip(msgs, parsed, strict=True):
            if new_start is None or events or after_seq:
                return False
            if msg.subject.startswith(start):
                try:
                    if decode_start_request(msg.data).instance_id:
                        return False
                except (msgspec.DecodeError, msgspec.ValidationError):
                    return False
        return True

    async def _pending_record(self, instance_id: str) -> tuple[InstanceRecord, int] | None:
        """The instance's record and its revision if it is PENDING: a client has started it and
        no worker has taken the start yet."""
        stored = await self.broker.get_record(instance_id)
        if stored is None:
            return None
        record = decode_record(stored[0])
        return (record, stored[1]) if record.status == WorkflowStatus.PENDING.value else None

    async def _terminate_unstarted(
        self, instance_id: str, pending: tuple[InstanceRecord, int], events: list[HistoryEvent]
    ) -> None:
        """A terminate for an instance whose start never came (its record stays PENDING
        after ``START_WAIT_DELIVERIES``, e.g. the starting client died between writing the
        record and sending the start) ends the record as TERMINATED, so the id can be purged
        or started again."""
        terminate = next((e for e in events if isinstance(e, ExecutionTerminated)), None)
        if terminate is None:
            return
        record, revision = pending
        record.status = TERMINATED
        record.output = terminate.output
        record.last_updated_at = datetime.now(UTC)
        log.info("workflow.terminated_before_start", instance_id=instance_id)
        await self.broker.claim_record(instance_id, encode_record(record), revision)

    @staticmethod
    def _is_stale(run: _CachedRun, received: list[tuple[HistoryEvent, str]]) -> bool:
        first = run.events[0]
        assert isinstance(first, ExecutionStarted)
        finished = isinstance(run.events[-1], ExecutionCompleted)
        return finished or any(rid and rid != first.execution_id for _, rid in received)

    def _events_of(
        self, instance_id: str, msg: Msg, now: datetime
    ) -> tuple[ExecutionStarted | None, list[HistoryEvent], str, int]:
        """One work message as (its start, if any; the events it carries; their run id; the
        history sequence its start was decided at, see ``WorkItem.after_seq``)."""
        s = self.subjects
        if msg.subject.startswith(f"{s.prefix}.start."):
            request = decode_start_request(msg.data)
            name = msg.subject.rsplit(".", 1)[-1]
            headers = msg.headers or {}
            started = ExecutionStarted(
                timestamp=now,
                name=name,
                execution_id=instance_id_for_message(
                    s.work_stream + ".exec", msg.metadata.sequence.stream
                ),
                input=request.input,
                version=self.registry.workflow(name).version,
                traceparent=headers.get("traceparent", ""),
                tracestate=headers.get("tracestate", ""),
            )
            return started, [], "", 0
        try:
            item = decode_work_item(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.error("work_item.invalid", subject=msg.subject, error=str(exc))
            return None, [], "", 0
        start = next((e for e in item.events if isinstance(e, ExecutionStarted)), None)
        if start is not None and not start.version and self.registry.has_workflow(start.name):
            start = msgspec.structs.replace(
                start, version=self.registry.workflow(start.name).version
            )
        events: list[HistoryEvent] = [
            e for e in item.events if not isinstance(e, ExecutionStarted)
        ]
        return start, events, item.execution_id, item.after_seq

    async def _resend_committed(self, instance_id: str, msgs: list[Msg]) -> None:
        """Send again the dispatches of the tasks that already took some of ``msgs``.

        A work item delivered again may belong to a task that is in history although its
        dispatches never went out (the worker died between the two, or lost its connection).
        Its task's dispatches are derived from history and sent again (the stream drops copies
        it already holds); the work items themselves then replay as duplicates and are
        acknowledged.
        """
        self._cache.pop(instance_id, None)
        stored = await self.broker.load_history(instance_id)
        wanted = {m.metadata.sequence.stream for m in msgs}
        history: list[HistoryEvent] = []
        run_start = 0
        committed: list[tuple[int, int, list[HistoryEvent]]] = []  # run start, position, events
        for item in stored:
            commit = decode_commit(item.data)
            if wanted.intersection(commit.consumed):
                committed.append((run_start, len(history), commit.events))
            for event in commit.events:
                if isinstance(event, ExecutionStarted):
                    run_start = len(history)
                history.append(event)
        dispatches: list[DispatchMessage] = []
        for start, position, events in committed:
            run = history[start:position]
            started = run[0] if run else events[0]
            assert isinstance(started, ExecutionStarted)
            dispatches += self._dispatcher.for_task(
                instance_id, run, still_open(events, history[start:]),
                dispatch_trace_headers(started),
            )
        if dispatches:
            log.info("workflow.dispatches_resent", instance_id=instance_id,
                     messages=len(dispatches))
            await self.broker.send_dispatches(dispatches)

    def _commit_messages(self, events: list[HistoryEvent], consumed: list[int]) -> list[bytes]:
        """A task's history messages: one ``TaskCommit`` holding all its events, or, if that
        would not fit the server's max payload, several (written as one atomic batch), the
        last of them naming the work items the task consumed."""
        whole = encode(TaskCommit(events, consumed))
        limit = self.broker.nc.max_payload - COMMIT_HEADROOM
        if len(whole) <= limit or len(events) == 1:
            return [whole]
        messages: list[bytes] = []
        chunk: list[HistoryEvent] = []
        size = 0
        for event in events:
            event_size = len(encode(event)) + 1
            if chunk and size + event_size > limit:
                messages.append(encode(TaskCommit(chunk)))
                chunk, size = [], 0
            chunk.append(event)
            size += event_size
        messages.append(encode(TaskCommit(chunk, consumed)))
        return messages

    async def _project(
        self,
        instance_id: str,
        started: ExecutionStarted,
        result: TaskResult,
        children: list[str],
        last_seq: int,
        now: datetime,
        next_run: list[HistoryEvent],
        cached: _CachedRun | None = None,
    ) -> None:
        """Write the instance's status record (the readable projection of its history).

        With ``cached``, a record whose visible fields did not change is not written again,
        and the write uses the KV revision this worker wrote last (one round trip).
        """
        status = result.status
        input_raw = started.input
        execution_id = started.execution_id
        output, failure = result.output, result.failure
        if next_run:
            new_start = next_run[0]
            assert isinstance(new_start, ExecutionStarted)
            status, input_raw, execution_id = "RUNNING", new_start.input, new_start.execution_id
            output, failure = msgspec.Raw(b"null"), None
        record = InstanceRecord(
            instance_id=instance_id,
            name=started.name,
            status=status,
            created_at=started.timestamp,
            last_updated_at=now,
            execution_id=execution_id,
            history_seq=last_seq,
            input=input_raw,
            output=output if status == "COMPLETED" or status == TERMINATED else NULL,
            custom_status=result.custom_status or NULL,
            failure=failure,
            parent_instance_id=started.parent.instance_id if started.parent else "",
            children=children,
        )
        visible = (
            status, bytes(record.output), bytes(record.custom_status), failure,
            len(record.children), execution_id,
        )
        if cached is not None and cached.projected == visible:
            return
        record = await offload(self.broker.payloads, instance_id, record)
        revision = await self.broker.put_record(
            instance_id, encode_record(record), last_seq, run_seq_of(execution_id),
            revision=None if cached is None else cached.kv_revision,
        )
        if cached is not None:
            cached.projected, cached.kv_revision = visible, revision

    # ----------------------------------------------------------- activity side

    async def _activity_loop(self, queue: str) -> None:
        consumer = self.subjects.activities_consumer(queue)
        # Queues share the runtime's limit: each gets its part of max_concurrent_activities.
        capacity = max(1, self.max_concurrent_activities // len(self.task_queues))
        stream = PullStream(self.broker.nc, self.subjects.work_stream, consumer, capacity)
        await stream.start()
        lease_checked = 0.0
        try:
            while not self._stopping:
                if time.monotonic() - lease_checked > 10:
                    # The consumer is shared: another runtime may have set a shorter lease.
                    lease_checked = time.monotonic()
                    with contextlib.suppress(Exception):
                        self._server_lease = await self.broker.ack_wait(consumer)
                for msg in await stream.next_batch(capacity):
                    self._act_slots += 1
                    self._spawn(self._run_activity(msg, stream))
        finally:
            await stream.stop()

    async def _run_activity(self, msg: Msg, stream: PullStream) -> None:
        try:
            await self._execute_activity(msg)
        except Exception as exc:  # never let one message kill the worker
            log.error("activity.internal_error", error=str(exc), subject=msg.subject)
            with contextlib.suppress(Exception):
                await self._settle(msg, nak_delay=1.0)
        finally:
            self._act_slots -= 1
            stream.release(1)

    async def _execute_activity(self, msg: Msg) -> None:
        try:
            task = decode_activity_task(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.error("activity.invalid_task", subject=msg.subject, error=str(exc))
            await self.broker.dead_letter("activity", msg, f"invalid activity task: {exc}")
            await self._settle(msg)
            return
        try:
            definition = self.registry.activity(task.name)
        except ActivityNotRegisteredError as exc:
            log.warning("activity.not_registered_here", activity=task.name, error=str(exc))
            await self._settle(msg, nak_delay=2.0)
            return
        ctx = ActivityContext(task, msg)
        consumer = self.subjects.activities_consumer(msg.subject.rsplit(".", 1)[-1])
        # observability: the attempt's span, metrics and log context
        with ActivityTrace(task, msg, consumer) as activity_trace:
            started = time.monotonic()
            keeper = self._keep_lease(msg)
            try:
                task = await resolve(self.broker.payloads, task)
                result = await self._call_activity(definition, ctx, task)
                event: HistoryEvent = TaskCompleted(
                    timestamp=datetime.now(UTC), task_id=task.task_id, result=to_json(result)
                )
                _activity_log.debug(
                    "activity.completed", instance_id=task.instance_id, activity=task.name,
                    attempt=task.attempt,
                    duration_ms=round((time.monotonic() - started) * 1000, 2),
                )
            except Exception as exc:
                activity_trace.failed(exc)
                failure = failure_from(exc)
                if isinstance(exc, InputDecodeError):
                    failure = msgspec.structs.replace(failure, non_retryable=True)
                event = TaskFailed(
                    timestamp=datetime.now(UTC), task_id=task.task_id, failure=failure
                )
                _activity_log.warning(
                    "activity.failed", instance_id=task.instance_id, activity=task.name,
                    attempt=task.attempt, error=str(exc), error_type=type(exc).__name__,
                )
            finally:
                keeper.cancel()
            item = await offload(
                self.broker.payloads, task.instance_id,
                WorkItem(task.instance_id, [event], task.execution_id),
            )
            crash_point("activity_before_result")
            inbox = self.subjects.inbox(task.instance_id)
            with publish_span(inbox, inbox.rsplit(".", 1)[0] + ".*") as trace_headers:
                await self._publish_result(
                    msg, inbox, encode(item), f"{task.execution_id}:{task.task_id}:result",
                    trace_headers,
                )
            crash_point("activity_before_ack")
            await self._settle(msg)

    async def _publish_result(
        self, msg: Msg, inbox: str, data: bytes, msg_id: str, headers: dict[str, str]
    ) -> None:
        """Publish an activity's result, retrying through a server fail-over or restart.

        The result is deduplicated by its Nats-Msg-Id, so retrying is safe, and far better
        than running the activity again; the lease is kept while retrying.
        """
        for attempt in range(100):
            try:
                await self.broker.publish(inbox, data, msg_id=msg_id, headers=headers)
                return
            except TRANSIENT_ERRORS as exc:
                if attempt == 99:
                    raise
                log.warning("activity.result_publish_retry", attempt=attempt, error=repr(exc))
                with contextlib.suppress(Exception):
                    await msg.in_progress()
                await asyncio.sleep(min(0.1 * 2**attempt, 2.0))

    async def _call_activity(
        self, definition: Any, ctx: ActivityContext, task: ActivityTask
    ) -> Any:
        sig = definition.signature
        args: tuple[Any, ...] = (ctx,)
        if sig.takes_input:
            args = (
                ctx,
                from_json(task.input, sig.input_type, what=f"input of activity '{task.name}'"),
            )
        timeout = task.start_to_close_timeout
        if definition.is_async:
            call = definition.fn(*args)
        else:
            call = asyncio.to_thread(definition.fn, *args)
        if timeout is None:
            return await call
        try:
            return await asyncio.wait_for(call, timeout)
        except TimeoutError:
            raise TimeoutError(
                f"activity '{task.name}' exceeded its start_to_close_timeout of {timeout}s"
            ) from None

    async def _settle(self, msg: Msg, *, nak_delay: float | None = None) -> bool:
        """Acknowledge (or, with ``nak_delay``, nak) a work message; see ``settle``."""
        return await settle(msg, nak_delay=nak_delay, confirm=self._confirm_acks)

    async def _settle_all(self, msgs: list[Msg], *, nak_delay: float | None = None) -> None:
        """Acknowledge (or, with ``nak_delay``, nak) ``msgs`` together; a message whose
        acknowledgement is lost is redelivered after its lease, and its effects deduplicated."""
        await asyncio.gather(
            *(self._settle(msg, nak_delay=nak_delay) for msg in msgs), return_exceptions=True
        )

    def _keep_lease(self, msg: Msg) -> _LeaseKeeper:
        """Extend the message's lease every third of it until cancelled (a timer, not a task:
        most activities end long before the first extension)."""
        return _LeaseKeeper(
            msg, lambda: max(min(self.activity_lease.total_seconds(), self._server_lease) / 3,
                             0.2)
        )


class _LeaseKeeper:
    """Sends ``in_progress`` for a message at intervals until cancelled."""

    def __init__(self, msg: Msg, interval: Callable[[], float]) -> None:
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


def _tune_gc() -> None:
    """Keep the collector off the hot path of a long-running worker.

    Everything loaded so far (modules, registry, code) is moved out of the collector's sight,
    and the young generation may grow larger before a collection: a worker allocates many
    short-lived messages and events, and the default threshold (700) makes it collect every
    few tasks. Thresholds are only ever raised.
    """
    gc.collect()
    gc.freeze()
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(young, 50_000), max(middle, 20), max(old, 20))


def _log_end(
    logger: Any, instance_id: str, workflow: str, result: TaskResult
) -> None:
    """One line per finished run: INFO when it completed, WARNING when it failed or was
    terminated (with the failure's type and message)."""
    if result.status == COMPLETED:
        logger.info("workflow.completed", instance_id=instance_id, workflow=workflow)
        return
    failure = result.failure
    logger.warning(
        "workflow.failed" if result.status == FAILED else "workflow.terminated",
        instance_id=instance_id, workflow=workflow,
        **({"error_type": failure.type, "error": failure.message} if failure else {}),
    )


def _is_finished(events: list[HistoryEvent]) -> bool:
    """True if the run in ``events`` has ended (and did not continue as new)."""
    last = events[-1] if events else None
    return isinstance(last, ExecutionCompleted) and last.status != "CONTINUED_AS_NEW"


def _scheduled_children(events: list[HistoryEvent]) -> list[str]:
    return [e.instance_id for e in events if isinstance(e, ChildWorkflowScheduled)]
