"""History events and wire messages: the schema of everything jetloom stores or sends.

Every history event is a frozen msgspec Struct in one tagged union, so an instance's history is
a list of plain JSON objects (``{"type": "task_scheduled", ...}``) that any language can read.
Payloads (inputs, outputs, event data) are kept as raw JSON text so history never depends on the
Python types that produced it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import msgspec

from engine.core.status import WorkflowStatus

Raw = msgspec.Raw

NULL = msgspec.Raw(b"null")
"""The payload of a call without input or a function that returned None."""


class FailureDetails(msgspec.Struct, frozen=True, omit_defaults=True):
    """Why a workflow, activity or child workflow failed."""

    type: str
    message: str
    stack: str = ""
    non_retryable: bool = False


class ParentInfo(msgspec.Struct, frozen=True, omit_defaults=True):
    """The workflow that started a child workflow, so the child can report back."""

    instance_id: str
    execution_id: str
    task_id: int
    app_id: str = ""
    """The application hosting the parent ('': none), whose inbox the report goes to."""


class Event(msgspec.Struct, frozen=True, tag_field="type", omit_defaults=True):
    """Base of all history events; ``timestamp`` is when the event was recorded."""

    timestamp: datetime


class ExecutionStarted(Event, tag="execution_started", frozen=True):
    """A run of an instance begins; everything before the last one belongs to older runs.

    ``app_id`` names the application whose runtimes run the instance ('': the default one);
    ``propagated`` is history a calling workflow propagated to it. A run that continued as new
    with ``save_events`` names the run it continued (``continued_from``) and the external
    events that run had already taken (``seen_event_ids``): events addressed to that run are
    this run's, unless they are ones it had seen.
    """

    name: str
    execution_id: str
    input: Raw = NULL
    version: str = ""
    parent: ParentInfo | None = None
    scheduled_start_at: datetime | None = None
    traceparent: str = ""
    tracestate: str = ""
    app_id: str = ""
    propagated: Raw = NULL
    continued_from: str = ""
    seen_event_ids: tuple[str, ...] = ()


class WorkflowTaskStarted(Event, tag="workflow_task_started", frozen=True):
    """A workflow task (one replay) began; its timestamp is the workflow's current time.

    ``patches`` lists patches first applied in this task; ``version`` pins the workflow version
    on a run's first task when its start event did not name one.
    """

    patches: tuple[str, ...] = ()
    version: str = ""


class TaskScheduled(Event, tag="task_scheduled", frozen=True):
    """The workflow called an activity."""

    task_id: int
    name: str
    input: Raw = NULL
    task_queue: str = "default"
    attempt: int = 1
    task_execution_id: str = ""
    start_to_close_timeout: float | None = None
    propagated: Raw = NULL
    """History the workflow propagates to the activity (opaque JSON; null: none)."""


class TaskCompleted(Event, tag="task_completed", frozen=True):
    """An activity returned."""

    task_id: int
    result: Raw = NULL


class TaskFailed(Event, tag="task_failed", frozen=True):
    """An activity attempt raised (or timed out)."""

    task_id: int
    failure: FailureDetails


class TaskCancelRequested(Event, tag="task_cancel_requested", frozen=True):
    """The workflow cancelled an activity it had called (``Task.cancel()``, or a
    ``when_any(..., cancel_losers=True)`` that it lost): its worker is told to stop it, and a
    result that still comes is dropped."""

    task_id: int


class TimerCreated(Event, tag="timer_created", frozen=True):
    """The workflow set a durable timer (also used for retry back-off and event timeouts)."""

    timer_id: int
    fire_at: datetime


class TimerFired(Event, tag="timer_fired", frozen=True):
    """A durable timer fired."""

    timer_id: int
    fire_at: datetime


class ChildWorkflowScheduled(Event, tag="child_workflow_scheduled", frozen=True):
    """The workflow started a child workflow (run by application ``app_id``; '': none)."""

    task_id: int
    name: str
    instance_id: str
    input: Raw = NULL
    app_id: str = ""
    propagated: Raw = NULL
    """History the workflow propagates to the child (opaque JSON; null: none)."""


class ChildWorkflowCompleted(Event, tag="child_workflow_completed", frozen=True):
    """A child workflow completed."""

    task_id: int
    result: Raw = NULL


class ChildWorkflowFailed(Event, tag="child_workflow_failed", frozen=True):
    """A child workflow failed or was terminated."""

    task_id: int
    failure: FailureDetails


class EventRaised(Event, tag="event_raised", frozen=True):
    """An external event was raised to the instance."""

    name: str
    data: Raw = NULL
    event_id: str = ""


class ExecutionSuspended(Event, tag="execution_suspended", frozen=True):
    """The instance was paused; new events are held until it resumes."""

    reason: str = ""


class ExecutionResumed(Event, tag="execution_resumed", frozen=True):
    """The instance was resumed."""

    reason: str = ""


class ExecutionTerminated(Event, tag="execution_terminated", frozen=True):
    """The instance was terminated from outside."""

    output: Raw = NULL
    recursive: bool = True


class ExecutionCompleted(Event, tag="execution_completed", frozen=True):
    """The run ended: COMPLETED, FAILED, TERMINATED or CONTINUED_AS_NEW."""

    status: str
    result: Raw = NULL
    failure: FailureDetails | None = None


HistoryEvent = (
    ExecutionStarted
    | WorkflowTaskStarted
    | TaskScheduled
    | TaskCompleted
    | TaskFailed
    | TaskCancelRequested
    | TimerCreated
    | TimerFired
    | ChildWorkflowScheduled
    | ChildWorkflowCompleted
    | ChildWorkflowFailed
    | EventRaised
    | ExecutionSuspended
    | ExecutionResumed
    | ExecutionTerminated
    | ExecutionCompleted
)


class TaskCommit(msgspec.Struct, frozen=True, omit_defaults=True):
    """One message of an instance's history (``<prefix>.history.<id>``): the events one
    workflow task appended, written together as one message so they are never half stored.

    ``consumed`` holds the work-stream sequences of the work items the task took in. A work
    item delivered again (its acknowledgement was lost, or the worker died after the append)
    is found here: its task is already in history, and the worker sends that task's
    dispatches again (deduplicated by message id) instead of running it twice.
    """

    events: list[HistoryEvent]
    consumed: list[int] = []


class WorkItem(msgspec.Struct, frozen=True, omit_defaults=True):
    """Events on their way to one instance (activity results, raised events, timer firings...).

    ``execution_id`` names the run they belong to; items for another run are dropped.
    An empty ``events`` list just asks for a workflow task (e.g. after a start).
    """

    instance_id: str
    events: list[HistoryEvent] = []
    execution_id: str = ""
    after_seq: int = 0
    """For an item carrying ``execution_started``: the sequence of the instance's last history
    message when the start was decided (0: none). If the instance has history, the start begins
    a new run only when that history is a finished run ending at exactly this sequence;
    otherwise it is a duplicate."""
    purge: bool = False
    """A retention purge, due now: remove the instance if its run ``execution_id`` has
    finished (sent by the message schedule its last workflow task set)."""


class StartRequest(msgspec.Struct, frozen=True, omit_defaults=True, forbid_unknown_fields=True):
    """The public start event: the body published to ``<prefix>.start.<workflow_name>``.

    Unknown fields are refused (unlike other messages): a start is written by hand in other
    languages, and ``{"id": ...}`` for ``{"instance_id": ...}`` must not run under a random id.
    """

    instance_id: str | None = None
    input: Raw = NULL


class ActivityTask(msgspec.Struct, frozen=True, omit_defaults=True):
    """An activity invocation, sent to ``<prefix>.outbox.activity.<task_queue>``."""

    instance_id: str
    execution_id: str
    workflow_name: str
    task_id: int
    name: str
    task_execution_id: str
    input: Raw = NULL
    attempt: int = 1
    start_to_close_timeout: float | None = None
    workflow_app_id: str = ""
    """The application hosting the calling workflow ('': none): the result goes to its inbox,
    ``<prefix>.app.<workflow_app_id>.inbox.<instance_id>`` (else ``<prefix>.inbox.<id>``)."""
    propagated: Raw = NULL
    """History the calling workflow propagated to the activity (null: none)."""


class CancelRequest(msgspec.Struct, frozen=True, omit_defaults=True):
    """Stop activities of a run (``<prefix>.cancel.<instance_id>``): those of ``task_ids``, or
    every activity of the run when it is empty (the run was terminated)."""

    instance_id: str
    execution_id: str
    task_ids: list[int] = []

    def covers(self, execution_id: str, task_id: int) -> bool:
        """True if the activity ``task_id`` of run ``execution_id`` is to stop."""
        if execution_id != self.execution_id:
            return False
        return not self.task_ids or task_id in self.task_ids


class ScheduledStart(msgspec.Struct, frozen=True, omit_defaults=True):
    """The body of a recurring schedule (``<prefix>.schedule.<schedule_id>``), which the server
    publishes on every tick; ``schedule`` is its ``Nats-Schedule`` value and ``time_zone`` its
    ``Nats-Schedule-Time-Zone`` (the server strips both from the copies it fires), from which a
    worker derives the tick (and so the instance id) of each firing."""

    schedule_id: str
    schedule: str
    time_zone: str | None = None


_event_encoder = msgspec.json.Encoder()
_event_decoder = msgspec.json.Decoder(HistoryEvent)
_commit_decoder = msgspec.json.Decoder(TaskCommit)
_work_item_decoder = msgspec.json.Decoder(WorkItem)
_start_decoder = msgspec.json.Decoder(StartRequest)
_activity_decoder = msgspec.json.Decoder(ActivityTask)
_cancel_decoder = msgspec.json.Decoder(CancelRequest)
_scheduled_start_decoder = msgspec.json.Decoder(ScheduledStart)


def encode(value: msgspec.Struct) -> bytes:
    """Encode any wire or history struct as JSON."""
    return _event_encoder.encode(value)


def decode_event(data: bytes) -> HistoryEvent:
    """Decode one history event."""
    event: HistoryEvent = _event_decoder.decode(data)
    return event


def current_run(events: list[HistoryEvent]) -> list[HistoryEvent]:
    """The events of the current run: from the last ``execution_started`` on (an instance id
    that was started again, or continued as new, keeps older runs before it)."""
    start = max((i for i, e in enumerate(events) if isinstance(e, ExecutionStarted)), default=0)
    return events[start:]


def run_is_finished(events: list[HistoryEvent]) -> bool:
    """True if the run in ``events`` has ended (and did not continue as new)."""
    last = events[-1] if events else None
    return isinstance(last, ExecutionCompleted) and (
        last.status != WorkflowStatus.CONTINUED_AS_NEW.value
    )


COMMIT_HEADROOM = 8 * 1024
"""Bytes of a history message kept free under the server's max payload for its headers."""


def task_commits(
    events: list[HistoryEvent], consumed: list[int], max_payload: int
) -> list[bytes]:
    """The history messages of one workflow task: one ``TaskCommit`` holding all its events,
    or, if that would not fit the server's ``max_payload``, several (to be written as one
    atomic batch), the last of them naming the work items the task consumed."""
    limit = max_payload - COMMIT_HEADROOM
    whole = encode(TaskCommit(events, consumed))
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


def decode_commit(data: bytes) -> TaskCommit:
    """Decode one history message (a ``TaskCommit``)."""
    return _commit_decoder.decode(data)


def history_events(messages: Iterable[bytes]) -> list[HistoryEvent]:
    """The events of stored history messages, oldest first."""
    return [event for data in messages for event in _commit_decoder.decode(data).events]


def decode_work_item(data: bytes) -> WorkItem:
    """Decode a work item (``inbox`` / ``outbox.workflow`` messages)."""
    return _work_item_decoder.decode(data)


def decode_start_request(data: bytes) -> StartRequest:
    """Decode a public start event; raises ``msgspec.DecodeError``/``ValidationError`` if bad."""
    return _start_decoder.decode(data)


def decode_activity_task(data: bytes) -> ActivityTask:
    """Decode an activity task message."""
    return _activity_decoder.decode(data)


def decode_cancel_request(data: bytes) -> CancelRequest:
    """Decode a cancel request (``<prefix>.cancel.<instance_id>`` messages)."""
    return _cancel_decoder.decode(data)


def decode_scheduled_start(data: bytes) -> ScheduledStart:
    """Decode the body of a recurring schedule's firing."""
    return _scheduled_start_decoder.decode(data)
