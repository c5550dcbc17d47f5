"""Rerunning a finished run from one of its activities: the new run's history (pure).

Dapr's ``rerun_workflow_from_event``, Temporal's reset: the new run's history is the source's
up to the activity scheduled at a chosen event (with the workflow task that scheduled it
whole), under a new run id. Its open activities and timers are sent out again; the code as
deployed now replays that history and carries on from there.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from engine.core.events import (
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    ChildWorkflowScheduled,
    ExecutionStarted,
    HistoryEvent,
    TaskCancelRequested,
    TaskScheduled,
    TimerCreated,
)

_COMMANDS = (TaskScheduled, TimerCreated, ChildWorkflowScheduled, TaskCancelRequested)


def rerun_history(
    source_id: str,
    source: list[HistoryEvent],
    event_id: int,
    *,
    execution_id: str,
    now: datetime,
    new_input: msgspec.Raw | None = None,
    traceparent: str = "",
    tracestate: str = "",
) -> list[HistoryEvent]:
    """The history a rerun of ``source`` (a finished run, as ``get_history`` returns it)
    from event ``event_id`` starts with.

    It holds the source's events up to the ``task_scheduled`` at ``event_id`` and the
    commands its workflow task issued with it (the code issues them again on replay, so the
    cut must not fall inside a task). The run gets ``execution_id`` (activity idempotency
    keys follow it, so the activities really run again), starts ``now``, has no parent, and
    the activity at ``event_id`` gets ``new_input`` when given.

    Raises:
        ValueError: no such event, not an activity's ``task_scheduled``, or a child workflow
            still open at that point (its result would never come to the new run).
    """
    if not 0 <= event_id < len(source):
        raise ValueError(
            f"no event {event_id} in the history of {source_id!r}: its events are numbered "
            f"0-{len(source) - 1} (jetloom history {source_id} shows them)"
        )
    target = source[event_id]
    if not isinstance(target, TaskScheduled):
        kind = type(target).__struct_config__.tag
        raise ValueError(
            f"event {event_id} of {source_id!r} is {kind}, not an activity's task_scheduled: "
            f"a rerun starts from an activity (jetloom history {source_id} shows the ids)"
        )
    end = event_id + 1
    while end < len(source) and isinstance(source[end], _COMMANDS):
        end += 1
    first = source[0]
    assert isinstance(first, ExecutionStarted)
    old_prefix, new_prefix = f"{first.execution_id}:", f"{execution_id}:"
    kept: list[HistoryEvent] = [
        msgspec.structs.replace(
            first, timestamp=now, execution_id=execution_id, parent=None,
            scheduled_start_at=None, traceparent=traceparent, tracestate=tracestate,
        )
    ]
    for position in range(1, end):
        event = source[position]
        if isinstance(event, TaskScheduled):
            key = event.task_execution_id
            if key.startswith(old_prefix):
                key = new_prefix + key[len(old_prefix) :]
            event = msgspec.structs.replace(event, task_execution_id=key)
            if position == event_id and new_input is not None:
                event = msgspec.structs.replace(event, input=new_input)
        kept.append(event)
    _refuse_open_children(source_id, event_id, kept)
    return kept


def _refuse_open_children(source_id: str, event_id: int, events: list[HistoryEvent]) -> None:
    open_children = {
        e.task_id: e.instance_id for e in events if isinstance(e, ChildWorkflowScheduled)
    }
    for event in events:
        if isinstance(event, ChildWorkflowCompleted | ChildWorkflowFailed):
            open_children.pop(event.task_id, None)
    if open_children:
        children = ", ".join(repr(c) for c in open_children.values())
        raise ValueError(
            f"rerunning {source_id!r} from event {event_id} would wait for child workflow "
            f"{children}, which will not report to the new run; choose an activity after "
            "the child finished"
        )
