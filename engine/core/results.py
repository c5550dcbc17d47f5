"""What a workflow task produces, and failures as history records them."""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from datetime import datetime

import msgspec

from engine.core.events import (
    NULL,
    EventRaised,
    ExecutionCompleted,
    ExecutionStarted,
    ExecutionTerminated,
    FailureDetails,
    HistoryEvent,
)
from engine.core.status import WorkflowStatus


def failure_from(exc: BaseException) -> FailureDetails:
    """FailureDetails of an exception, with its formatted stack."""
    stack = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return FailureDetails(type=type(exc).__name__, message=str(exc), stack=stack)


@dataclass
class TaskResult:
    """What one workflow task produced."""

    new_events: list[HistoryEvent]
    """Events to append, in order (first: the task's WorkflowTaskStarted)."""
    status: str
    """RUNNING, SUSPENDED, COMPLETED, FAILED, TERMINATED or CONTINUED_AS_NEW."""
    output: msgspec.Raw = field(default_factory=lambda: NULL)
    failure: FailureDetails | None = None
    custom_status: msgspec.Raw | None = None
    continue_as_new: ExecutionStarted | None = None
    """The first event of the next run, when the workflow continued as new."""
    carried_events: list[EventRaised] = field(default_factory=list)
    """Unconsumed external events carried into the next run (``save_events``)."""


def termination(terminate: ExecutionTerminated, now: datetime) -> TaskResult:
    """A task that ends a run with ``terminate`` at ``now`` without running its code: for a
    run that never ran, or whose code cannot run (its workflow is hosted nowhere, or no longer
    replays its history). It records no ``workflow_task_started``, so a replay of the run never
    starts the code either."""
    terminated = WorkflowStatus.TERMINATED.value
    completed = ExecutionCompleted(timestamp=now, status=terminated, result=terminate.output)
    return TaskResult(
        new_events=[terminate, completed], status=terminated, output=terminate.output
    )
