"""``WorkflowStatus`` and ``WorkflowState`` as ``dapr.ext.workflow`` has them."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

import engine
from engine.dapr._errors import FailureDetails, OrchestrationFailedError
from engine.dapr._history import naive_utc


class WorkflowStatus(enum.Enum):
    """Where an instance stands (Dapr's values)."""

    UNKNOWN = 0
    RUNNING = 1
    COMPLETED = 2
    FAILED = 3
    TERMINATED = 4
    PENDING = 5
    SUSPENDED = 6
    STALLED = 7


_STATUS_OF = {
    engine.WorkflowStatus.PENDING: WorkflowStatus.PENDING,
    engine.WorkflowStatus.RUNNING: WorkflowStatus.RUNNING,
    engine.WorkflowStatus.COMPLETED: WorkflowStatus.COMPLETED,
    engine.WorkflowStatus.FAILED: WorkflowStatus.FAILED,
    engine.WorkflowStatus.TERMINATED: WorkflowStatus.TERMINATED,
    engine.WorkflowStatus.SUSPENDED: WorkflowStatus.SUSPENDED,
    engine.WorkflowStatus.STALLED: WorkflowStatus.STALLED,
    # The instance is starting its next run: alive, as Dapr reports it.
    engine.WorkflowStatus.CONTINUED_AS_NEW: WorkflowStatus.RUNNING,
}


def status_of(native: engine.WorkflowStatus) -> WorkflowStatus:
    """Dapr's status for an engine status."""
    return _STATUS_OF.get(native, WorkflowStatus.UNKNOWN)


def custom_status_text(stored: str | None) -> str | None:
    """The custom status as Dapr returns it: a string exactly as set, else its JSON text.

    The engine keeps every custom status as JSON; Dapr keeps a string as the string itself.
    """
    if stored is None:
        return None
    try:
        value = msgspec.json.decode(stored)
    except msgspec.DecodeError:
        return stored
    return value if isinstance(value, str) else stored


@dataclass(frozen=True)
class _InstanceSnapshot:
    """The fields Dapr's ``WorkflowState`` proxies to."""

    instance_id: str
    name: str
    runtime_status: WorkflowStatus
    created_at: datetime
    last_updated_at: datetime
    serialized_input: str | None
    serialized_output: str | None
    serialized_custom_status: str | None
    failure_details: FailureDetails | None

    def raise_if_failed(self) -> None:
        if self.failure_details is not None:
            raise OrchestrationFailedError(
                f"Orchestration '{self.instance_id}' failed: {self.failure_details.message}",
                self.failure_details,
            )


class WorkflowState:
    """Represents a snapshot of a workflow instance's current state, including runtime status.

    Attributes (as in Dapr): ``instance_id``, ``name``, ``runtime_status``, ``created_at`` and
    ``last_updated_at`` (naive UTC), ``serialized_input``, ``serialized_output``,
    ``serialized_custom_status``, ``failure_details``; ``raise_if_failed()``, ``to_json()``.
    """

    def __init__(self, state: Any) -> None:
        if isinstance(state, engine.WorkflowState):
            failure = state.failure_details
            state = _InstanceSnapshot(
                instance_id=state.instance_id,
                name=state.name,
                runtime_status=status_of(state.runtime_status),
                created_at=naive_utc(state.created_at),
                last_updated_at=naive_utc(state.last_updated_at),
                serialized_input=state.serialized_input,
                serialized_output=state.serialized_output,
                serialized_custom_status=custom_status_text(state.serialized_custom_status),
                failure_details=None if failure is None else FailureDetails._of(failure),
            )
        self.__obj = state

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__obj, name)

    @property
    def runtime_status(self) -> WorkflowStatus:
        """Where the instance stands."""
        status = self.__obj.runtime_status
        return status if isinstance(status, WorkflowStatus) else WorkflowStatus.UNKNOWN

    def __str__(self) -> str:
        return json.dumps(self.to_json(), indent=4, sort_keys=True, default=str)

    def to_json(self) -> dict[str, Any]:
        """The state as a dict (times as datetimes), as Dapr's ``to_json`` returns it."""
        obj = self.__obj
        state: dict[str, Any] = {
            "instance_id": obj.instance_id,
            "name": obj.name,
            "runtime_status": obj.runtime_status.name,
            "created_at": obj.created_at,
            "last_updated_at": obj.last_updated_at,
            "serialized_input": obj.serialized_input,
            "serialized_output": obj.serialized_output,
            "serialized_custom_status": obj.serialized_custom_status,
        }
        if obj.failure_details is not None:
            state["failure_details"] = {
                "message": obj.failure_details.message,
                "error_type": obj.failure_details.error_type,
                "stack_trace": obj.failure_details.stack_trace,
            }
        return state
