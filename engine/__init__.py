"""jetloom: durable workflows for Python on NATS JetStream.

The public API: everything a user (or another package) needs is exported here; the modules
below ``engine`` (``core``, ``worker``, ``client`` and the ``client_*`` modules behind it,
``offload``, ``purge``, ``cli``, ``http``) are private.
``engine.dapr`` mirrors Dapr's workflow SDK for programs ported from Dapr.
"""

from engine.client import WorkflowClient
from engine.core.context import WorkflowContext
from engine.core.errors import (
    ActivityNotRegisteredError,
    InputDecodeError,
    InstanceAlreadyRunningError,
    InstanceFinishedError,
    InstanceNotFoundError,
    InvalidInstanceIdError,
    JetloomError,
    NonDeterminismError,
    ScheduleAlreadyExistsError,
    ScheduleNotFoundError,
    TaskCancelledError,
    TaskFailedError,
    WorkflowNotRegisteredError,
)
from engine.core.events import (
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    ChildWorkflowScheduled,
    EventRaised,
    ExecutionCompleted,
    ExecutionResumed,
    ExecutionStarted,
    ExecutionSuspended,
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
    WorkflowTaskStarted,
)
from engine.core.executor import ReplayRules
from engine.core.retention import RetentionPolicy
from engine.core.retry import RetryPolicy
from engine.core.schedules import WorkflowSchedule
from engine.core.state import WorkflowState
from engine.core.status import WorkflowStatus
from engine.core.tasks import Task, when_all, when_any
from engine.signals import stop_signal
from engine.worker.loop import run as run_service
from engine.worker.runtime import ActivityContext, WorkflowRuntime

__all__ = [
    "ActivityContext",
    "ActivityNotRegisteredError",
    "ChildWorkflowCompleted",
    "ChildWorkflowFailed",
    "ChildWorkflowScheduled",
    "EventRaised",
    "ExecutionCompleted",
    "ExecutionResumed",
    "ExecutionStarted",
    "ExecutionSuspended",
    "ExecutionTerminated",
    "FailureDetails",
    "HistoryEvent",
    "InputDecodeError",
    "InstanceAlreadyRunningError",
    "InstanceFinishedError",
    "InstanceNotFoundError",
    "InvalidInstanceIdError",
    "JetloomError",
    "NonDeterminismError",
    "ParentInfo",
    "ReplayRules",
    "RetentionPolicy",
    "RetryPolicy",
    "ScheduleAlreadyExistsError",
    "ScheduleNotFoundError",
    "Task",
    "TaskCancelRequested",
    "TaskCancelledError",
    "TaskCompleted",
    "TaskFailed",
    "TaskFailedError",
    "TaskScheduled",
    "TimerCreated",
    "TimerFired",
    "WorkflowClient",
    "WorkflowContext",
    "WorkflowNotRegisteredError",
    "WorkflowRuntime",
    "WorkflowSchedule",
    "WorkflowState",
    "WorkflowStatus",
    "WorkflowTaskStarted",
    "run_service",
    "stop_signal",
    "when_all",
    "when_any",
]
