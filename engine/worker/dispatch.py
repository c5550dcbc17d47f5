"""The messages that carry a committed workflow task's commands out (pure: no I/O).

A workflow task appends its events to history first; then these messages go out: activity
tasks, timer schedules, child starts, reports to a parent, terminations of children, the
trigger of a run that continued as new, requests to stop activities (cancelled ones, or all
those of a terminated run), and the schedule that purges a finished run when its retention
has passed. Each is derived from the task's events alone and has a deterministic message id,
so a worker that finds a task already in history (a work item delivered again after a crash)
derives and sends the very same messages again, and the stream drops the copies.
"""

from __future__ import annotations

from collections.abc import Iterable

from brokers import DispatchMessage, Subjects, schedule_headers
from engine.core.events import (
    ActivityTask,
    CancelRequest,
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    ChildWorkflowScheduled,
    ExecutionCompleted,
    ExecutionStarted,
    ExecutionTerminated,
    FailureDetails,
    HistoryEvent,
    ParentInfo,
    TaskCancelRequested,
    TaskCompleted,
    TaskFailed,
    TaskScheduled,
    TimerCreated,
    TimerFired,
    WorkItem,
    encode,
)
from engine.core.retention import RetentionPolicy

CONTINUED_AS_NEW = "CONTINUED_AS_NEW"


class Dispatcher:
    """Derives dispatch messages for the instances of one prefix.

    Args:
        subjects: the prefix's subjects.
        ttl: the per-message TTL of dispatch copies in the history stream (``Nats-TTL``).
        retention: how long finished runs are kept (None: until purged by hand).
    """

    def __init__(
        self, subjects: Subjects, ttl: str, retention: RetentionPolicy | None = None
    ) -> None:
        self.subjects = subjects
        self.ttl = ttl
        self.retention = retention

    def for_task(
        self,
        instance_id: str,
        before: list[HistoryEvent],
        new_events: Iterable[HistoryEvent],
        trace: dict[str, str],
    ) -> list[DispatchMessage]:
        """The dispatches of a task that appended ``new_events`` after ``before``.

        ``before`` is the history the task ran on (from the run's ``execution_started``, or
        empty for a run's first task, whose start is then among ``new_events``); ``trace``
        the trace headers the activity tasks and child starts carry.
        """
        history = list(before)
        new_events = list(new_events)
        started = _last_start(history)
        # An activity cancelled by the task that scheduled it is never sent out.
        cancelled_at_once = {
            e.task_id for e in new_events if isinstance(e, TaskCancelRequested)
        } & {e.task_id for e in new_events if isinstance(e, TaskScheduled)}
        cancels = False
        out: list[DispatchMessage] = []
        for event in new_events:
            if isinstance(event, ExecutionStarted):
                if history and _continued_as_new(history):
                    out.append(self._trigger(instance_id, event))
                started = event
            elif started is None:
                pass  # not a run's event (cannot happen in a well-formed history)
            elif isinstance(event, TaskScheduled):
                if event.task_id not in cancelled_at_once:
                    out.append(self._activity(instance_id, started, event, trace))
            elif isinstance(event, TaskCancelRequested):
                cancels = cancels or event.task_id not in cancelled_at_once
            elif isinstance(event, TimerCreated):
                out.append(self._timer(instance_id, started, event))
            elif isinstance(event, ChildWorkflowScheduled):
                out.append(self._child(instance_id, started, event, trace))
            elif isinstance(event, ExecutionCompleted):
                if cancels:
                    out.append(self._cancel(instance_id, started, history))
                    cancels = False
                out.extend(self._completion(instance_id, started, event, history))
            history.append(event)
        if cancels and started is not None:
            out.append(self._cancel(instance_id, started, history))
        return out

    def _headers(self, msg_id: str) -> dict[str, str]:
        """Headers of a dispatch copy in the history stream.

        The message id is deterministic, so a copy sent again (a task found already in history)
        or sourced twice (the work stream's source resuming from an older position) is dropped
        as a duplicate. Timer schedules carry none: the scheduler copies headers onto the fired
        message, which would then be a duplicate of its own schedule.
        """
        return {"Nats-TTL": self.ttl, "Nats-Msg-Id": msg_id}

    def _trigger(self, instance_id: str, new_run: ExecutionStarted) -> DispatchMessage:
        """Asks for the first task of a run that continued as new."""
        return DispatchMessage(
            self.subjects.outbox_workflow(instance_id, new_run.app_id),
            encode(WorkItem(instance_id, [], new_run.execution_id)),
            self._headers(f"{new_run.execution_id}:trigger"),
        )

    def _activity(
        self, instance_id: str, started: ExecutionStarted, event: TaskScheduled,
        trace: dict[str, str],
    ) -> DispatchMessage:
        task = ActivityTask(
            instance_id=instance_id,
            execution_id=started.execution_id,
            workflow_name=started.name,
            task_id=event.task_id,
            name=event.name,
            task_execution_id=event.task_execution_id,
            input=event.input,
            attempt=event.attempt,
            start_to_close_timeout=event.start_to_close_timeout,
            workflow_app_id=started.app_id,
            propagated=event.propagated,
        )
        return DispatchMessage(
            self.subjects.outbox_activity(event.task_queue),
            encode(task),
            {**self._headers(f"{started.execution_id}:{event.task_id}:task"), **trace},
        )

    def _timer(
        self, instance_id: str, started: ExecutionStarted, event: TimerCreated
    ) -> DispatchMessage:
        fired = WorkItem(
            instance_id,
            [TimerFired(timestamp=event.fire_at, timer_id=event.timer_id, fire_at=event.fire_at)],
            started.execution_id,
        )
        return DispatchMessage(
            self.subjects.timer(instance_id, f"{started.execution_id[:8]}-{event.timer_id}"),
            encode(fired),
            schedule_headers(
                event.fire_at, self.subjects.outbox_workflow(instance_id, started.app_id),
                self.ttl,
            ),
        )

    def _cancel(
        self, instance_id: str, started: ExecutionStarted, history: list[HistoryEvent],
        *, every_activity: bool = False,
    ) -> DispatchMessage:
        """Asks the workers running activities of the run to stop them: those the run
        cancelled so far (the request names them all, so the last one stored is enough for a
        worker to look up), or every activity of the run."""
        ids: list[int] = []
        if not every_activity:
            run = _current_run(history)
            ids = sorted({e.task_id for e in run if isinstance(e, TaskCancelRequested)})
        request = CancelRequest(instance_id, started.execution_id, ids)
        key = "all" if every_activity else str(len(ids))
        return DispatchMessage(
            self.subjects.cancel(instance_id),
            encode(request),
            self._headers(f"{started.execution_id}:cancel:{key}"),
        )

    def _retention(
        self, instance_id: str, started: ExecutionStarted, completed: ExecutionCompleted
    ) -> DispatchMessage | None:
        """The schedule that purges a finished run once its retention has passed."""
        keep_for = None if self.retention is None else self.retention.keep_for(completed.status)
        if keep_for is None:
            return None
        purge = WorkItem(instance_id, [], started.execution_id, purge=True)
        return DispatchMessage(
            self.subjects.retention_timer(instance_id),
            encode(purge),
            schedule_headers(
                completed.timestamp + keep_for,
                self.subjects.outbox_workflow(instance_id, started.app_id),
                self.ttl,
            ),
        )

    def _child(
        self, instance_id: str, started: ExecutionStarted, event: ChildWorkflowScheduled,
        trace: dict[str, str],
    ) -> DispatchMessage:
        child_start = ExecutionStarted(
            timestamp=event.timestamp,
            name=event.name,
            execution_id=f"{started.execution_id[:16]}-{event.task_id}",
            input=event.input,
            parent=ParentInfo(instance_id, started.execution_id, event.task_id, started.app_id),
            traceparent=trace.get("traceparent", ""),
            tracestate=trace.get("tracestate", ""),
            app_id=event.app_id,
            propagated=event.propagated,
        )
        return DispatchMessage(
            self.subjects.outbox_workflow(event.instance_id, event.app_id),
            encode(WorkItem(event.instance_id, [child_start])),
            {**self._headers(f"{started.execution_id}:{event.task_id}:child"), **trace},
        )

    def _completion(
        self,
        instance_id: str,
        started: ExecutionStarted,
        completed: ExecutionCompleted,
        history: list[HistoryEvent],
    ) -> list[DispatchMessage]:
        """A finished child reports to its parent; a terminate stops the run's activities
        (and, if recursive, its children); retention schedules the purge."""
        out: list[DispatchMessage] = []
        retention = self._retention(instance_id, started, completed)
        if retention is not None:
            out.append(retention)
        parent = started.parent
        if parent is not None and completed.status != CONTINUED_AS_NEW:
            report: HistoryEvent
            if completed.status == "COMPLETED":
                report = ChildWorkflowCompleted(
                    timestamp=completed.timestamp, task_id=parent.task_id, result=completed.result
                )
            else:
                failure = completed.failure or FailureDetails(
                    type="Terminated" if completed.status == "TERMINATED" else "Failed",
                    message=f"child workflow {instance_id!r} ended as {completed.status}",
                )
                report = ChildWorkflowFailed(
                    timestamp=completed.timestamp, task_id=parent.task_id, failure=failure
                )
            out.append(DispatchMessage(
                self.subjects.outbox_workflow(parent.instance_id, parent.app_id),
                encode(WorkItem(parent.instance_id, [report], parent.execution_id)),
                self._headers(f"{started.execution_id}:report"),
            ))
        if completed.status == "TERMINATED":
            if open_activities(_current_run(history)):
                out.append(self._cancel(instance_id, started, history, every_activity=True))
            terminated = next(
                (e for e in reversed(history) if isinstance(e, ExecutionTerminated)), None
            )
            if terminated is not None and terminated.recursive:
                apps = _child_apps(history)
                for child_id in running_children(history):
                    stop = ExecutionTerminated(
                        timestamp=completed.timestamp, output=terminated.output, recursive=True
                    )
                    out.append(DispatchMessage(
                        self.subjects.outbox_workflow(child_id, apps.get(child_id, "")),
                        encode(WorkItem(child_id, [stop])),
                        self._headers(f"{started.execution_id}:terminate:{child_id}"),
                    ))
        return out


def still_open(events: Iterable[HistoryEvent], history: list[HistoryEvent]) -> list[HistoryEvent]:
    """``events`` without the commands that ``history`` shows answered already (an activity
    with a result, a timer that fired, a child that finished): sending those again would only
    run them twice."""
    closing = TaskCompleted | TaskFailed | TaskCancelRequested
    answered_tasks = {e.task_id for e in history if isinstance(e, closing)}
    fired = {e.timer_id for e in history if isinstance(e, TimerFired)}
    finished_children = {
        e.task_id for e in history if isinstance(e, ChildWorkflowCompleted | ChildWorkflowFailed)
    }
    kept: list[HistoryEvent] = []
    for event in events:
        if isinstance(event, TaskScheduled) and event.task_id in answered_tasks:
            continue
        if isinstance(event, TimerCreated) and event.timer_id in fired:
            continue
        if isinstance(event, ChildWorkflowScheduled) and event.task_id in finished_children:
            continue
        kept.append(event)
    return kept


def running_children(events: list[HistoryEvent]) -> list[str]:
    """Instance ids of the child workflows scheduled in ``events`` that have not finished."""
    scheduled = {e.task_id: e.instance_id for e in events if isinstance(e, ChildWorkflowScheduled)}
    for e in events:
        if isinstance(e, ChildWorkflowCompleted | ChildWorkflowFailed):
            scheduled.pop(e.task_id, None)
    return list(scheduled.values())


def _child_apps(events: list[HistoryEvent]) -> dict[str, str]:
    """The application of each child workflow scheduled in ``events``."""
    return {e.instance_id: e.app_id for e in events if isinstance(e, ChildWorkflowScheduled)}


def open_activities(run: list[HistoryEvent]) -> list[int]:
    """Task ids of the activities of ``run`` with neither a result nor a cancellation."""
    scheduled = [e.task_id for e in run if isinstance(e, TaskScheduled)]
    closed = {
        e.task_id for e in run if isinstance(e, TaskCompleted | TaskFailed | TaskCancelRequested)
    }
    return [task_id for task_id in scheduled if task_id not in closed]


def _current_run(history: list[HistoryEvent]) -> list[HistoryEvent]:
    start = max(
        (i for i, e in enumerate(history) if isinstance(e, ExecutionStarted)), default=0
    )
    return history[start:]


def _last_start(history: list[HistoryEvent]) -> ExecutionStarted | None:
    return next((e for e in reversed(history) if isinstance(e, ExecutionStarted)), None)


def _continued_as_new(history: list[HistoryEvent]) -> bool:
    last = history[-1]
    return isinstance(last, ExecutionCompleted) and last.status == CONTINUED_AS_NEW
