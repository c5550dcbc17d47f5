"""Return types of Dapr's management APIs: history events, instance id pages, ``UNSET``."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from engine import (
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    ChildWorkflowScheduled,
    EventRaised,
    ExecutionCompleted,
    ExecutionResumed,
    ExecutionStarted,
    ExecutionSuspended,
    ExecutionTerminated,
    HistoryEvent,
    TaskCompleted,
    TaskFailed,
    TaskScheduled,
    TimerCreated,
    TimerFired,
    WorkflowTaskStarted,
)
from engine.dapr._errors import FailureDetails


class _Unset:
    """Type of ``UNSET``."""

    def __repr__(self) -> str:
        return "<unset>"


UNSET: Any = _Unset()
"""Default of an argument whose absence means something other than ``None``."""


@dataclass(frozen=True)
class WorkflowInstanceIdPage:
    """One page of workflow instance IDs; ``continuation_token`` None on the last page."""

    instance_ids: list[str]
    continuation_token: str | None


class WorkflowHistoryEventType(enum.Enum):
    """The kind of a workflow history event (Dapr's names; unknown kinds are ``UNKNOWN``)."""

    UNKNOWN = "unknown"
    EXECUTION_STARTED = "executionStarted"
    EXECUTION_COMPLETED = "executionCompleted"
    EXECUTION_TERMINATED = "executionTerminated"
    EXECUTION_SUSPENDED = "executionSuspended"
    EXECUTION_RESUMED = "executionResumed"
    EXECUTION_STALLED = "executionStalled"
    TASK_SCHEDULED = "taskScheduled"
    TASK_COMPLETED = "taskCompleted"
    TASK_FAILED = "taskFailed"
    CHILD_WORKFLOW_INSTANCE_CREATED = "childWorkflowInstanceCreated"
    CHILD_WORKFLOW_INSTANCE_COMPLETED = "childWorkflowInstanceCompleted"
    CHILD_WORKFLOW_INSTANCE_FAILED = "childWorkflowInstanceFailed"
    DETACHED_WORKFLOW_INSTANCE_CREATED = "detachedWorkflowInstanceCreated"
    TIMER_CREATED = "timerCreated"
    TIMER_FIRED = "timerFired"
    EVENT_SENT = "eventSent"
    EVENT_RAISED = "eventRaised"
    CONTINUE_AS_NEW = "continueAsNew"
    WORKFLOW_STARTED = "workflowStarted"
    WORKFLOW_COMPLETED = "workflowCompleted"

    @classmethod
    def _missing_(cls, value: object) -> WorkflowHistoryEventType:
        return cls.UNKNOWN


_RERUNNABLE = frozenset({WorkflowHistoryEventType.TASK_SCHEDULED})
"""jetloom reruns from activities (Dapr also from timers and child workflows)."""


@dataclass(frozen=True)
class WorkflowHistoryEvent:
    """A single event from a workflow instance's execution history.

    ``timestamp`` is naive UTC (Dapr's convention); ``event_id`` is -1 for events without
    one; ``task_scheduled_id`` names the call a result closes.
    """

    event_id: int
    timestamp: datetime
    event_type: WorkflowHistoryEventType
    name: str | None
    task_scheduled_id: int | None
    failure_details: FailureDetails | None

    @property
    def is_rerunnable(self) -> bool:
        """Whether rerun_workflow_from_event is expected to accept this event."""
        return self.event_type in _RERUNNABLE


def naive_utc(moment: datetime) -> datetime:
    """``moment`` as a naive UTC datetime, as Dapr's SDK returns times."""
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


def history_event(event: HistoryEvent) -> WorkflowHistoryEvent:
    """Dapr's view of one native history event."""
    kind = WorkflowHistoryEventType.UNKNOWN
    event_id, name, scheduled_id, failure = -1, None, None, None
    match event:
        case ExecutionStarted():
            kind, name = WorkflowHistoryEventType.EXECUTION_STARTED, event.name
        case WorkflowTaskStarted():
            kind = WorkflowHistoryEventType.WORKFLOW_STARTED
        case TaskScheduled():
            kind, event_id, name = (
                WorkflowHistoryEventType.TASK_SCHEDULED, event.task_id, event.name
            )
        case TaskCompleted():
            kind, scheduled_id = WorkflowHistoryEventType.TASK_COMPLETED, event.task_id
        case TaskFailed():
            kind, scheduled_id = WorkflowHistoryEventType.TASK_FAILED, event.task_id
            failure = FailureDetails._of(event.failure)
        case TimerCreated():
            kind, event_id = WorkflowHistoryEventType.TIMER_CREATED, event.timer_id
        case TimerFired():
            kind = WorkflowHistoryEventType.TIMER_FIRED
        case ChildWorkflowScheduled():
            kind, event_id, name = (
                WorkflowHistoryEventType.CHILD_WORKFLOW_INSTANCE_CREATED, event.task_id,
                event.name,
            )
        case ChildWorkflowCompleted():
            kind = WorkflowHistoryEventType.CHILD_WORKFLOW_INSTANCE_COMPLETED
            scheduled_id = event.task_id
        case ChildWorkflowFailed():
            kind = WorkflowHistoryEventType.CHILD_WORKFLOW_INSTANCE_FAILED
            scheduled_id, failure = event.task_id, FailureDetails._of(event.failure)
        case EventRaised():
            kind, name = WorkflowHistoryEventType.EVENT_RAISED, event.name
        case ExecutionSuspended():
            kind = WorkflowHistoryEventType.EXECUTION_SUSPENDED
        case ExecutionResumed():
            kind = WorkflowHistoryEventType.EXECUTION_RESUMED
        case ExecutionTerminated():
            kind = WorkflowHistoryEventType.EXECUTION_TERMINATED
        case ExecutionCompleted():
            kind = (
                WorkflowHistoryEventType.CONTINUE_AS_NEW
                if event.status == "CONTINUED_AS_NEW"
                else WorkflowHistoryEventType.EXECUTION_COMPLETED
            )
            failure = None if event.failure is None else FailureDetails._of(event.failure)
    return WorkflowHistoryEvent(
        event_id=event_id,
        timestamp=naive_utc(event.timestamp),
        event_type=kind,
        name=name,
        task_scheduled_id=scheduled_id,
        failure_details=failure,
    )
