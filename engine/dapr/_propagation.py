"""Workflow history propagation: a caller hands its history to a child workflow or activity.

The caller's Dapr context keeps a log of its own calls and their results as it runs (it is
rebuilt the same way on every replay). A call with ``propagation=`` sends that log, as one
chunk per workflow, beside the callee's input: the engine carries it in a field of its own
(``propagated_history`` of ``call_activity``/``call_child_workflow``), so the input stays as
the caller sent it. The callee's context reads it back with ``get_propagated_history()``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec

from engine.dapr._errors import FailureDetails
from engine.dapr._history import WorkflowHistoryEvent, WorkflowHistoryEventType


class PropagationScope(enum.Enum):
    """Controls how a parent workflow's history is propagated to children.

    * ``OWN_HISTORY`` — propagate the caller's events only.
    * ``LINEAGE`` — propagate the caller's events plus any ancestor events it received.
    """

    NONE = 0
    OWN_HISTORY = 1
    LINEAGE = 2


class PropagationNotFoundError(Exception):
    """Raised when a query against propagated history finds no match."""


class _LoggedEvent(msgspec.Struct, frozen=True, omit_defaults=True):
    """One event of a propagated log: a call, or the result that closed it."""

    event_id: int
    type: str
    timestamp: datetime
    name: str = ""
    task_scheduled_id: int | None = None
    input: str | None = None
    output: str | None = None
    error_type: str = ""
    error_message: str = ""
    stack_trace: str = ""

    def failure(self) -> FailureDetails | None:
        if not (self.error_type or self.error_message):
            return None
        return FailureDetails(self.error_message, self.error_type, self.stack_trace or None)

    def public(self) -> WorkflowHistoryEvent:
        return WorkflowHistoryEvent(
            event_id=self.event_id,
            timestamp=self.timestamp,
            event_type=WorkflowHistoryEventType(self.type),
            name=self.name or None,
            task_scheduled_id=self.task_scheduled_id,
            failure_details=self.failure(),
        )


class _Chunk(msgspec.Struct, frozen=True):
    """The log of one workflow instance."""

    app_id: str
    instance_id: str
    workflow_name: str
    events: list[_LoggedEvent]


class _Envelope(msgspec.Struct, frozen=True):
    scope: int
    chunks: list[_Chunk]


@dataclass(frozen=True)
class ActivityResult:
    """A reconstructed view of a single activity invocation from propagated history.

    ``input``/``output`` are the JSON-encoded payloads or ``None`` when unset. ``error`` is
    ``None`` unless the activity failed.
    """

    name: str
    started: bool
    completed: bool
    failed: bool
    input: str | None
    output: str | None
    error: FailureDetails | None


@dataclass(frozen=True)
class ChildWorkflowResult:
    """A reconstructed view of a single child workflow invocation."""

    name: str
    started: bool
    completed: bool
    failed: bool
    output: str | None
    error: FailureDetails | None


def _closing(events: list[_LoggedEvent], scheduled_id: int, kinds: tuple[str, str]) -> tuple[
    bool, bool, str | None, FailureDetails | None
]:
    completed = failed = False
    output: str | None = None
    error: FailureDetails | None = None
    for e in events:
        if e.task_scheduled_id != scheduled_id:
            continue
        if e.type == kinds[0]:
            completed, output = True, e.output
        elif e.type == kinds[1]:
            failed, error = True, e.failure()
    return completed, failed, output, error


@dataclass(frozen=True)
class WorkflowResult:
    """The propagated history of one workflow instance (one chunk of the chain)."""

    instance_id: str
    app_id: str
    name: str
    _events: list[_LoggedEvent] = field(repr=False)

    def get_activities_by_name(self, name: str) -> list[ActivityResult]:
        """Every activity of this workflow with that name, in execution order."""
        results = []
        for e in self._events:
            if e.type == "taskScheduled" and e.name == name:
                completed, failed, output, error = _closing(
                    self._events, e.event_id, ("taskCompleted", "taskFailed")
                )
                results.append(ActivityResult(name, True, completed, failed, e.input, output,
                                              error))
        return results

    def get_last_activity_by_name(self, name: str) -> ActivityResult:
        """The most recent activity with that name.

        Raises:
            PropagationNotFoundError: no activity of that name is in this history.
        """
        found = self.get_activities_by_name(name)
        if not found:
            raise PropagationNotFoundError(
                f"no activity named {name!r} in propagated history for workflow {self.name!r}"
            )
        return found[-1]

    def get_child_workflows_by_name(self, name: str) -> list[ChildWorkflowResult]:
        """Every child workflow of this workflow with that name, in execution order."""
        results = []
        for e in self._events:
            if e.type == "childWorkflowInstanceCreated" and e.name == name:
                completed, failed, output, error = _closing(
                    self._events, e.event_id,
                    ("childWorkflowInstanceCompleted", "childWorkflowInstanceFailed"),
                )
                results.append(ChildWorkflowResult(name, True, completed, failed, output, error))
        return results

    def get_last_child_workflow_by_name(self, name: str) -> ChildWorkflowResult:
        """The most recent child workflow with that name.

        Raises:
            PropagationNotFoundError: no child workflow of that name is in this history.
        """
        found = self.get_child_workflows_by_name(name)
        if not found:
            raise PropagationNotFoundError(
                f"no child workflow named {name!r} in propagated history for workflow "
                f"{self.name!r}"
            )
        return found[-1]


class PropagatedHistory:
    """History propagated from a parent workflow to a child workflow or activity.

    Chunks keep execution order: index 0 is the oldest ancestor, the last is the immediate
    caller. ``events`` are all events, flattened in chunk order.
    """

    def __init__(self, chunks: list[_Chunk], scope: PropagationScope) -> None:
        self._chunks = chunks
        self.scope = scope
        self.events = [e.public() for c in chunks for e in c.events]

    def get_app_ids(self) -> list[str]:
        """Ordered, deduplicated list of app IDs in the history chain."""
        return list(dict.fromkeys(c.app_id for c in self._chunks))

    def get_events_by_app_id(self, app_id: str) -> list[WorkflowHistoryEvent]:
        """Events produced by the given app, in execution order."""
        return [e.public() for c in self._chunks if c.app_id == app_id for e in c.events]

    def get_events_by_instance_id(self, instance_id: str) -> list[WorkflowHistoryEvent]:
        """Events produced by the given workflow instance, in execution order."""
        return [
            e.public() for c in self._chunks if c.instance_id == instance_id for e in c.events
        ]

    def get_events_by_workflow_name(self, workflow_name: str) -> list[WorkflowHistoryEvent]:
        """Events produced by workflows with the given name, in execution order."""
        return [
            e.public() for c in self._chunks if c.workflow_name == workflow_name for e in c.events
        ]

    def get_workflows(self) -> list[WorkflowResult]:
        """All workflows in the chain, ancestor first, immediate caller last."""
        return [WorkflowResult(c.instance_id, c.app_id, c.workflow_name, c.events)
                for c in self._chunks]

    def get_workflows_by_name(self, name: str) -> list[WorkflowResult]:
        """All workflows with that name, in execution order."""
        return [w for w in self.get_workflows() if w.name == name]

    def get_last_workflow_by_name(self, name: str) -> WorkflowResult:
        """The most recent workflow in the chain with that name.

        Raises:
            PropagationNotFoundError: no workflow of that name is in the chain.
        """
        found = self.get_workflows_by_name(name)
        if not found:
            raise PropagationNotFoundError(f"no workflow named {name!r} in propagated history")
        return found[-1]


class HistoryLog:
    """What one workflow run did, as it runs: the source of the history it propagates."""

    def __init__(self, app_id: str, instance_id: str, workflow_name: str) -> None:
        self._app_id = app_id
        self._instance_id = instance_id
        self._workflow_name = workflow_name
        self._events: list[_LoggedEvent] = []
        self._next_id = 0

    def scheduled(self, kind: str, name: str, when: datetime, input: str | None) -> int:
        """Log a call (``taskScheduled`` or ``childWorkflowInstanceCreated``); its event id."""
        self._next_id += 1
        self._events.append(_LoggedEvent(
            event_id=self._next_id, type=kind, timestamp=when, name=name, input=input
        ))
        return self._next_id

    def closed(
        self, kind: str, scheduled_id: int, when: datetime, *, output: str | None = None,
        failure: FailureDetails | None = None,
    ) -> None:
        """Log the result of call ``scheduled_id``."""
        self._next_id += 1
        self._events.append(_LoggedEvent(
            event_id=self._next_id, type=kind, timestamp=when, task_scheduled_id=scheduled_id,
            output=output,
            error_type=failure.error_type if failure else "",
            error_message=failure.message if failure else "",
            stack_trace=(failure.stack_trace or "") if failure else "",
        ))

    def envelope(
        self, scope: PropagationScope, received: PropagatedHistory | None
    ) -> dict[str, Any] | None:
        """The propagated history to send with a call of that scope (None: nothing)."""
        if scope is PropagationScope.NONE:
            return None
        own = _Chunk(self._app_id, self._instance_id, self._workflow_name, list(self._events))
        chunks = [own]
        if scope is PropagationScope.LINEAGE and received is not None:
            chunks = [*received._chunks, own]
        return msgspec.to_builtins(_Envelope(scope.value, chunks))  # type: ignore[no-any-return]


def received_history(value: Any) -> PropagatedHistory | None:
    """The propagated history a callee received (the engine's decoded ``propagated_history``),
    or None if its caller sent none."""
    if value is None:
        return None
    envelope = msgspec.convert(value, _Envelope)
    return PropagatedHistory(envelope.chunks, PropagationScope(envelope.scope))
