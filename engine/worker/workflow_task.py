"""One workflow task: read the run, replay it with the new events, commit the decision.

A task appends all its events to the instance's history as one message, guarded by the
history's last sequence (optimistic concurrency); then its dispatches and the instance's
record go out together, and only then are its work messages acknowledged (by the caller).
See docs/engine.md, "The flow of one workflow task".
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec
import structlog

from brokers import AppendConflictError, JetStreamBroker, WorkMessage
from engine.core.codec import to_json
from engine.core.errors import NonDeterminismError, WorkflowNotRegisteredError
from engine.core.events import (
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    ExecutionCompleted,
    ExecutionStarted,
    ExecutionTerminated,
    HistoryEvent,
    ParentInfo,
    WorkflowTaskStarted,
    current_run,
    decode_commit,
    history_events,
    run_is_finished,
    task_commits,
)
from engine.core.executor import ReplayRules, WorkflowExecution
from engine.core.registry import Registry
from engine.core.results import TaskResult, termination
from engine.core.retention import RetentionPolicy
from engine.core.state import InstanceRecord, start_record, started_of_record
from engine.core.status import WorkflowStatus
from engine.offload import offload, offload_all, resolve, resolve_all, stored_names
from engine.worker.dispatch import Dispatcher, still_open
from engine.worker.faults import crash_point
from engine.worker.history_cache import CachedRun, HistoryCache, scheduled_children
from engine.worker.projection import RecordProjector
from engine.worker.retention import purge_item, purge_when_due
from engine.worker.work_items import Work, WorkReader
from observability import WorkflowTaskTrace, dispatch_trace_headers, publish_span

log = structlog.get_logger("jetloom.runtime")

START_WAIT = 0.2
"""Seconds after which events that overtook their instance's start are delivered again."""
START_WAIT_DELIVERIES = 50
"""Deliveries after which such events are dead-lettered (the start never came)."""
FINISHED = (
    WorkflowStatus.COMPLETED.value, WorkflowStatus.FAILED.value, WorkflowStatus.TERMINATED.value
)


@dataclass
class _Task:
    """A workflow task ready to replay: its run as stored and what came in."""

    instance_id: str
    run: CachedRun
    history: list[HistoryEvent]
    """The run to replay (its ``execution_started`` first)."""
    prefix_events: list[HistoryEvent]
    """Events this task appends before its own: a new run's ``execution_started``."""
    incoming: list[HistoryEvent]
    now: datetime
    old_run_end: int
    """The last sequence of a finished run this task's new run replaces (0: none)."""
    from_cache: bool

    @property
    def first(self) -> ExecutionStarted:
        first = self.history[0]
        assert isinstance(first, ExecutionStarted)
        return first


class WorkflowTasks:
    """Runs workflow tasks for the instances of one runtime."""

    def __init__(
        self,
        broker: JetStreamBroker,
        registry: Registry,
        cache: HistoryCache,
        projector: RecordProjector,
        reader: WorkReader,
        rules: ReplayRules | None = None,
        retention: RetentionPolicy | None = None,
    ) -> None:
        self.broker = broker
        self.registry = registry
        self.rules = rules or ReplayRules()
        self.cache = cache
        self.projector = projector
        self.reader = reader
        self.dispatcher = Dispatcher(broker.subjects, broker.outbox_ttl, retention)

    async def run(
        self,
        instance_id: str,
        msgs: list[WorkMessage],
        task_trace: WorkflowTaskTrace | None = None,
        *,
        may_skip_read: bool = False,
    ) -> float | None:
        """Run one workflow task for ``instance_id`` with the events in ``msgs``.

        ``task_trace`` (observability) is told when the run is known, replayed and committed.

        Returns None when the messages can be acknowledged, or a delay after which they
        should be delivered again (a scheduled start that is not due yet).
        """
        purges = {m.stream_seq: item for m in msgs if (item := purge_item(m)) is not None}
        if purges:
            # A retention schedule fired: purge the run it was set for, if still the latest.
            self.cache.forget(instance_id)
            await purge_when_due(
                self.broker, instance_id, {item.execution_id for item in purges.values()}
            )
            msgs = [m for m in msgs if m.stream_seq not in purges]
            if not msgs:
                return None
        if any(m.num_delivered > 1 for m in msgs):
            await self.resend_committed(instance_id, msgs)
        task = await self._prepare(instance_id, msgs, may_skip_read)
        if not isinstance(task, _Task):
            return task
        await self._decide(task, msgs, task_trace)
        return None

    # ------------------------------------------------------------- reading

    async def history(self, instance_id: str) -> CachedRun:
        """The instance's current run: from the cache, else read from the stream."""
        cached = self.cache.get(instance_id)
        if cached is not None:
            return cached
        stored = await self.broker.load_history(instance_id)
        events = await resolve_all(
            self.broker.payloads, current_run(history_events(item.data for item in stored))
        )
        run = CachedRun(events, stored[-1].seq if stored else 0)
        self.cache.remember(instance_id, run)
        return run

    async def _prepare(
        self, instance_id: str, msgs: list[WorkMessage], may_skip_read: bool
    ) -> _Task | float | None:
        """The run and the incoming events; or what to answer without replaying (None: done,
        a delay: deliver the messages again after it)."""
        work = [self.reader.read(msg, datetime.now(UTC)) for msg in msgs]
        from_cache = instance_id in self.cache
        if may_skip_read and not from_cache and self.reader.only_fresh_starts(msgs, work):
            # No history can exist yet (the id was derived from this very message, or the
            # client found none), unless the start is delivered again after its append or the
            # id was started meanwhile: then the append conflicts and the retry reads it.
            run = CachedRun([], 0)
        else:
            run = await self.history(instance_id)
        # The task's time is taken after the read: a read that waited (a fail-over) may return
        # tasks other workers committed meanwhile, and the workflow's time must not go back.
        now = datetime.now(UTC)
        # A client's start runs only while the record it wrote first still waits for it.
        awaited = (
            await self.projector.awaiting_start(instance_id)
            if any(w.from_client for w in work) else None
        )
        started, start_after, received = await self._received(
            instance_id, work, None if awaited is None else awaited[0].execution_id
        )
        if run.events and _is_stale(run, received):
            # A client started a new run since this worker cached the old one.
            self.cache.forget(instance_id)
            run = await self.history(instance_id)
            from_cache = False
        old_run_end = 0
        if started is not None and run.events:
            if start_after and start_after == run.last_seq and run_is_finished(run.events):
                # A client's new run of a finished instance: it replaces the old run, whose
                # history is dropped once the new one is appended.
                old_run_end = run.last_seq
                run = CachedRun([], run.last_seq)
            else:
                log.info("start.duplicate_ignored", instance_id=instance_id)
                started = None
        history: list[HistoryEvent] = list(run.events)
        prefix_events: list[HistoryEvent] = []
        if not history:
            if started is None:
                if not received:
                    return None  # nothing but a start that is no longer wanted
                unstarted = await self._no_run(instance_id, msgs, [e for e, _ in received])
                if not isinstance(unstarted, tuple):
                    return unstarted
                # A terminate for a run whose start has not reached history: the run is
                # the one its record shows, ended in this task (see _decide).
                awaited = unstarted
                started = await resolve(self.broker.payloads, started_of_record(awaited[0]))
            history, prefix_events = [started], [started]
            if awaited is not None and awaited[0].execution_id == started.execution_id:
                run.kv_revision = awaited[1]  # its first record update replaces that record
        first = history[0]
        assert isinstance(first, ExecutionStarted)
        # Events sent to an earlier run of this instance id are stale, but for those sent to
        # the run this one continued with save_events: they are this run's.
        incoming = [e for e, run_id in received if _is_for(first, run_id)]
        if first.scheduled_start_at and first.scheduled_start_at > now and len(history) == 1:
            return max(0.05, (first.scheduled_start_at - now).total_seconds())
        return _Task(
            instance_id, run, history, prefix_events, incoming, now, old_run_end, from_cache
        )

    async def _received(
        self, instance_id: str, work: list[Work], awaited_run: str | None
    ) -> tuple[ExecutionStarted | None, int, list[tuple[HistoryEvent, str]]]:
        """The start among ``work`` (the first one; later ones are duplicates), the history
        sequence it was decided at, and every event with the run it is for.

        A client's start counts only if it is the run the instance's record waits for
        (``awaited_run``): one whose instance was terminated, purged or started again before
        any worker ran it is dropped.
        """
        started: ExecutionStarted | None = None
        start_after = 0
        received: list[tuple[HistoryEvent, str]] = []
        for new_start, events, run_id, after_seq, from_client in work:
            events = await resolve_all(self.broker.payloads, events)
            if from_client and new_start is not None and awaited_run != new_start.execution_id:
                log.info("start.dropped", instance_id=instance_id,
                         reason="terminated, purged or started again before it ran")
                new_start = None
            if new_start is not None:
                new_start = await resolve(self.broker.payloads, new_start)
                if started is None:
                    started, start_after = new_start, after_seq
                else:
                    log.info("start.duplicate_ignored", instance_id=instance_id)
            received.extend((event, run_id) for event in events)
        return started, start_after, received

    async def _no_run(
        self, instance_id: str, msgs: list[WorkMessage], events: list[HistoryEvent]
    ) -> tuple[InstanceRecord, int] | float | None:
        """Events for an instance without a run: a terminate of a run whose record waits for
        its start ends that run now (returns the record and its revision); other events wait
        for a start that is on its way (returns the delay), else are dead-lettered."""
        pending = await self.projector.awaiting_start(instance_id)
        if pending is not None:
            if any(isinstance(e, ExecutionTerminated) for e in events):
                # Whether its start overtook this or never comes (no worker hosts its
                # workflow, the starting client died), the run ends at once: a start that
                # arrives later finds it ended, and runs nothing.
                return pending
            if max(m.num_delivered for m in msgs) < START_WAIT_DELIVERIES:
                # Events that overtook their instance's start (raised right after a client
                # start, before it reached the work stream): deliver them again.
                log.info("work_item.waiting_for_start", instance_id=instance_id)
                return START_WAIT
        reason = f"no instance {instance_id!r}: nothing to deliver the events to"
        log.warning("work_item.dead_lettered", instance_id=instance_id, reason=reason)
        for msg in msgs:
            await self.broker.dead_letter("inbox", msg, reason)
        return None

    # ------------------------------------------------------------- deciding

    async def _decide(
        self, task: _Task, msgs: list[WorkMessage], task_trace: WorkflowTaskTrace | None
    ) -> None:
        """Replay the run with the incoming events and commit what the code decided."""
        history, pinned_version = self._pin_version(task.history)
        first, run = task.first, task.run
        # With replay_every_task the code is replayed from history on every task (as Dapr
        # does), so code changed in the running process takes effect at once.
        execution = None if self.rules.replay_every_task else run.execution
        from_cache = execution is not None and execution.history_length == len(history)
        if task_trace is not None:  # observability: opens the workflow task span
            task_trace.begin(first, history, from_cache=from_cache)
        # From here the live execution is ahead of the stored history until the append commits.
        run.execution = None
        terminate = next((e for e in task.incoming if isinstance(e, ExecutionTerminated)), None)
        if task.prefix_events and terminate is not None:
            # Terminated before its first task: the run ends without running its code (as a
            # client's terminate of a run no worker took yet does).
            log.info("workflow.terminated_before_start", instance_id=task.instance_id)
            now = max(task.now, first.timestamp)
            await self._commit(task, history, None, termination(terminate, now), msgs, task_trace)
            return
        try:
            if execution is None or execution.history_length != len(history):
                execution = WorkflowExecution(self.registry, task.instance_id, history, self.rules)
            result = None if execution.is_complete else execution.run_task(task.incoming, task.now)
        except (NonDeterminismError, WorkflowNotRegisteredError) as exc:
            await self._without_code(task, history, exc, msgs, task_trace)
            return
        if result is None:
            await self._already_complete(task, execution, history)
            return
        if task_trace is not None:  # observability
            task_trace.replayed(result, incoming=len(task.incoming))
        if pinned_version is not None:
            first_task = result.new_events[0]
            assert isinstance(first_task, WorkflowTaskStarted)
            result.new_events[0] = msgspec.structs.replace(first_task, version=pinned_version)
        if _changes_nothing(result, history, task.prefix_events, pinned_version):
            if from_cache and task.incoming:
                # The cached view may predate tasks another worker appended, whose results
                # it cannot recognise: only a fresh read may call these events duplicates.
                raise AppendConflictError("events unknown to the cached history")
            # Only duplicates or stale events came in (e.g. a redelivery after a lost ack):
            # append nothing, but re-write the projection in case that was what was lost.
            self.cache.forget(task.instance_id)
            await self.projector.project(
                task.instance_id, first, result, scheduled_children(history), run.last_seq,
                task.now, [],
            )
            return
        await self._commit(task, history, execution, result, msgs, task_trace)

    async def _without_code(
        self,
        task: _Task,
        history: list[HistoryEvent],
        exc: Exception,
        msgs: list[WorkMessage],
        task_trace: WorkflowTaskTrace | None,
    ) -> None:
        """The run's code cannot run here: its workflow is not hosted, or it no longer replays
        its history. A run that has ended takes no events anyway, and a terminate is recorded
        without the code; anything else fails the task (the instance shows STALLED until a
        worker that can run it takes the work)."""
        if run_is_finished(history):
            if task.incoming:
                log.info("workflow.events_after_completion_dropped",
                         instance_id=task.instance_id, events=len(task.incoming))
            return
        terminate = next((e for e in task.incoming if isinstance(e, ExecutionTerminated)), None)
        if terminate is None:
            child_start = task.prefix_events and task.first.parent is not None
            if child_start and not await self._child_record(task.instance_id, task.first):
                return
            raise exc
        log.info("workflow.terminated_without_code", instance_id=task.instance_id,
                 error_type=type(exc).__name__, error=str(exc))
        now = max(task.now, history[-1].timestamp)
        await self._commit(task, history, None, termination(terminate, now), msgs, task_trace)

    async def _child_record(self, instance_id: str, started: ExecutionStarted) -> bool:
        """Give a child whose run cannot start here a record (PENDING; the stall that follows
        shows it STALLED with the reason), so that it can be seen, terminated and purged, as
        a client's start can. False if its parent no longer waits for it (it was terminated
        or purged meanwhile): the start is stale and runs nothing."""
        if await self.broker.get_record(instance_id) is not None:
            return True
        parent = started.parent
        assert parent is not None
        stored = await self.broker.load_history(parent.instance_id)
        if not parent_waits(history_events(item.data for item in stored), parent):
            log.info("start.dropped", instance_id=instance_id,
                     reason="its parent no longer waits for it")
            return False
        stored_start = await offload(self.broker.payloads, instance_id, started)
        await self.broker.claim_record(
            instance_id, start_record(instance_id, stored_start, 0), None
        )
        return True

    async def _already_complete(
        self, task: _Task, execution: WorkflowExecution, history: list[HistoryEvent]
    ) -> None:
        """A run that has ended takes no events; its record may have missed the end (a crash
        or fail-over right after the append), so it is written again."""
        if task.incoming:
            log.info(
                "workflow.events_after_completion_dropped",
                instance_id=task.instance_id, events=len(task.incoming),
            )
        final = TaskResult(
            new_events=[],
            status=execution.status,
            output=execution.output,
            failure=execution.failure,
            custom_status=None
            if execution.custom_status is None
            else to_json(execution.custom_status),
        )
        ended = history[-1].timestamp  # the time of the change, should the record lack it
        await self.projector.project(
            task.instance_id, task.first, final, scheduled_children(history), task.run.last_seq,
            ended, [], task.run, repair=True,
        )

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

    # ------------------------------------------------------------- committing

    async def _commit(
        self,
        task: _Task,
        history: list[HistoryEvent],
        execution: WorkflowExecution | None,
        result: TaskResult,
        msgs: list[WorkMessage],
        task_trace: WorkflowTaskTrace | None,
    ) -> None:
        """Append the task's events as one message, then send its dispatches and write the
        record together (``execution``: the live run it leaves, if its code ran)."""
        instance_id, run, first = task.instance_id, task.run, task.first
        # What is written carries references in place of payloads over the size threshold.
        payloads = self.broker.payloads
        stored_events = await offload_all(payloads, instance_id, result.new_events)
        next_run: list[HistoryEvent] = []
        if result.continue_as_new is not None:
            next_run = [result.continue_as_new, *result.carried_events]
        appended = [
            *await offload_all(payloads, instance_id, task.prefix_events),
            *stored_events,
            *await offload_all(payloads, instance_id, next_run),
        ]
        dispatches = self.dispatcher.for_task(
            instance_id, [] if task.prefix_events else history, appended,
            dispatch_trace_headers(first),
        )
        messages = self.commit_messages(appended, [m.stream_seq for m in msgs])
        subject = self.broker.subjects.history(instance_id)
        with publish_span(  # observability: the task's history append as one PRODUCER span
            subject, subject.rsplit(".", 1)[0] + ".*",
            message_count=len(messages) + len(dispatches),
        ):
            last_seq = await self.broker.commit(instance_id, run.last_seq, messages)
        if task_trace is not None:  # observability: counts starts/ends, emits the run's span
            task_trace.committed(result, instance_id)
        crash_point("after_append")
        children = run.children_after(result.new_events)
        live = None if self.rules.replay_every_task else execution
        cached = CachedRun(next_run, last_seq) if next_run else CachedRun(
            history + result.new_events, last_seq, live,
            projected=run.projected, kv_revision=run.kv_revision, children=children,
        )
        self.cache.remember(instance_id, cached)
        # The task is durable: its dispatches and the instance's record go out together.
        await asyncio.gather(
            self.broker.send_dispatches(dispatches),
            self.projector.project(
                instance_id, first, result, children, last_seq, task.now, next_run, cached
            ),
        )
        await self._drop_old_runs(task, last_seq - len(messages) + 1, history, result, next_run)
        if not next_run and result.status in FINISHED:
            self.cache.forget(instance_id)  # a finished run takes no more tasks
            _log_end(instance_id, first.name, result)

    async def _drop_old_runs(
        self,
        task: _Task,
        first_seq: int,
        history: list[HistoryEvent],
        result: TaskResult,
        next_run: list[HistoryEvent],
    ) -> None:
        """Compact away the history (and payloads) of runs this task replaced: a finished run
        a client started again, or the run that continued as new (whose successor starts in
        this task's first message, ``first_seq``). A failure here only leaves them longer."""
        instance_id = task.instance_id
        if task.old_run_end:
            with contextlib.suppress(Exception):
                await self.broker.compact_history(instance_id, task.old_run_end + 1)
        if next_run:
            payloads = self.broker.payloads
            with contextlib.suppress(Exception):
                await self.broker.compact_history(instance_id, first_seq)
                # The old run's payloads went with its history (those the new run still uses
                # stay).
                await payloads.delete(
                    stored_names(payloads, instance_id, history + result.new_events)
                    - stored_names(payloads, instance_id, next_run)
                )

    def commit_messages(self, events: list[HistoryEvent], consumed: list[int]) -> list[bytes]:
        """A task's history messages: one ``TaskCommit``, or several if it would not fit the
        server's max payload (see ``task_commits``)."""
        return task_commits(events, consumed, self.broker.nc.max_payload)

    async def resend_committed(self, instance_id: str, msgs: list[WorkMessage]) -> None:
        """Send again the dispatches of the tasks that already took some of ``msgs``.

        A work item delivered again may belong to a task that is in history although its
        dispatches never went out (the worker died between the two, or lost its connection).
        Its task's dispatches are derived from history and sent again (the stream drops copies
        it already holds); the work items themselves then replay as duplicates and are
        acknowledged.
        """
        self.cache.forget(instance_id)
        stored = await self.broker.load_history(instance_id)
        wanted = {m.stream_seq for m in msgs}
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
        dispatches = []
        for start, position, events in committed:
            run = history[start:position]
            started = run[0] if run else events[0]
            assert isinstance(started, ExecutionStarted)
            dispatches += self.dispatcher.for_task(
                instance_id, run, still_open(events, history[start:]),
                dispatch_trace_headers(started),
            )
        if dispatches:
            log.info("workflow.dispatches_resent", instance_id=instance_id,
                     messages=len(dispatches))
            await self.broker.send_dispatches(dispatches)


def parent_waits(parent_history: Iterable[HistoryEvent], parent: ParentInfo) -> bool:
    """True if the parent's run ``parent.execution_id`` is in ``parent_history``, unfinished,
    and has not heard of the end of its child task ``parent.task_id``."""
    waiting = False
    for event in parent_history:
        if isinstance(event, ExecutionStarted):
            waiting = event.execution_id == parent.execution_id
        elif isinstance(event, ExecutionCompleted) or (
            isinstance(event, ChildWorkflowCompleted | ChildWorkflowFailed)
            and event.task_id == parent.task_id
        ):
            waiting = False
    return waiting


def _is_stale(run: CachedRun, received: list[tuple[HistoryEvent, str]]) -> bool:
    """True if a cached run cannot take ``received``: it has ended, or they are for a newer
    run."""
    first = run.events[0]
    assert isinstance(first, ExecutionStarted)
    ended = isinstance(run.events[-1], ExecutionCompleted)
    return ended or any(not _is_for(first, rid) for _, rid in received)


def _is_for(run: ExecutionStarted, run_id: str) -> bool:
    """True if events addressed to ``run_id`` belong to the run that ``run`` started: any run
    (''), that run, or the run it continued as new with save_events."""
    return run_id in ("", run.execution_id) or (
        bool(run.continued_from) and run_id == run.continued_from
    )


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


def _log_end(instance_id: str, workflow: str, result: TaskResult) -> None:
    """One line per finished run: INFO when it completed, WARNING when it failed or was
    terminated (with the failure's type and message)."""
    if result.status == WorkflowStatus.COMPLETED.value:
        log.info("workflow.completed", instance_id=instance_id, workflow=workflow)
        return
    failure = result.failure
    log.warning(
        "workflow.failed" if result.status == WorkflowStatus.FAILED.value
        else "workflow.terminated",
        instance_id=instance_id, workflow=workflow,
        **({"error_type": failure.type, "error": failure.message} if failure else {}),
    )
