"""jetloom: durable workflows for Python on NATS JetStream.

The public API; everything else in this package is private.
"""

from engine._client import WorkflowClient
from engine._context import WorkflowContext
from engine._errors import NonDeterminismError, TaskFailedError
from engine._retry import RetryPolicy
from engine._runtime import ActivityContext, WorkflowRuntime
from engine._state import WorkflowState, WorkflowStatus
from engine._task import Task, when_all, when_any

__all__ = [
    "ActivityContext",
    "NonDeterminismError",
    "RetryPolicy",
    "Task",
    "TaskFailedError",
    "WorkflowClient",
    "WorkflowContext",
    "WorkflowRuntime",
    "WorkflowState",
    "WorkflowStatus",
    "when_all",
    "when_any",
]
