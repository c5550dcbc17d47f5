"""``dapr.ext.workflow`` on jetloom: Dapr workflow programs run unchanged but for the import.

Replace ``dapr.ext.workflow`` with ``engine.dapr`` (and ``dapr.ext.workflow.aio`` with
``engine.dapr.aio``); the runtime and clients connect to NATS (``NATS_URL``) instead of a
sidecar, and a process's application id comes from ``APP_ID``. See docs/dapr.md for what
differs and why.
"""

from engine.dapr._client import DaprWorkflowClient
from engine.dapr._context import DaprWorkflowContext, WorkflowActivityContext
from engine.dapr._errors import FailureDetails, NonRetryableError, TaskFailedError
from engine.dapr._history import (
    UNSET,
    WorkflowHistoryEvent,
    WorkflowHistoryEventType,
    WorkflowInstanceIdPage,
)
from engine.dapr._propagation import (
    ActivityResult,
    ChildWorkflowResult,
    PropagatedHistory,
    PropagationNotFoundError,
    PropagationScope,
    WorkflowResult,
)
from engine.dapr._runtime import WorkflowRuntime, alternate_name
from engine.dapr._state import WorkflowState, WorkflowStatus
from engine.dapr._task import RetryPolicy, when_all, when_any

__all__ = [
    "UNSET",
    "ActivityResult",
    "ChildWorkflowResult",
    "DaprWorkflowClient",
    "DaprWorkflowContext",
    "FailureDetails",
    "NonRetryableError",
    "PropagatedHistory",
    "PropagationNotFoundError",
    "PropagationScope",
    "RetryPolicy",
    "TaskFailedError",
    "WorkflowActivityContext",
    "WorkflowHistoryEvent",
    "WorkflowHistoryEventType",
    "WorkflowInstanceIdPage",
    "WorkflowResult",
    "WorkflowRuntime",
    "WorkflowState",
    "WorkflowStatus",
    "alternate_name",
    "when_all",
    "when_any",
]
