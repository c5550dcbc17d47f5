"""Rerunning a finished instance from one of its activities, as
``WorkflowClient.rerun_workflow_from_event`` does it: the source checked, the new instance's
history (``engine.core.rerun``) written whole with its dispatches, then its record."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from brokers import AppendConflictError, JetStreamBroker
from engine.client_starts import startable, started_meanwhile
from engine.core.codec import to_json
from engine.core.errors import InstanceAlreadyRunningError, InstanceNotFoundError
from engine.core.events import ExecutionStarted, HistoryEvent, TaskCancelRequested, task_commits
from engine.core.instance_ids import check_instance_id
from engine.core.rerun import rerun_history
from engine.core.state import InstanceRecord, decode_record, history_seq_of, start_record
from engine.core.status import WorkflowStatus
from engine.offload import offload_all
from engine.worker.dispatch import Dispatcher, still_open
from observability import dispatch_trace_headers, publish_span


async def rerun_source(broker: JetStreamBroker, source: str) -> InstanceRecord:
    """The record of ``source``, an instance a rerun may start from.

    Raises:
        InstanceNotFoundError: no such instance.
        InstanceAlreadyRunningError: it has not finished (nor stalled).
    """
    stored = await broker.get_record(source)
    if stored is None:
        raise InstanceNotFoundError(
            f"no instance {source!r} to rerun; check the id (jetloom list shows instances)"
        )
    record = decode_record(stored[0])
    status = WorkflowStatus(record.status)
    if not (status.is_terminal or status is WorkflowStatus.STALLED):
        raise InstanceAlreadyRunningError(
            f"instance {source!r} is {record.status}: a rerun starts from a finished "
            "instance; wait for it, or terminate it first"
        )
    return record


async def rerun_from_event(
    broker: JetStreamBroker,
    source: str,
    record: InstanceRecord,
    events: list[HistoryEvent],
    event_id: int,
    *,
    new_instance_id: str | None,
    input: Any,
    overwrite_input: bool,
) -> str:
    """Start a new instance from ``source`` (its ``record`` and the ``events`` of its run) at
    the activity scheduled at ``event_id``; the new instance's id.

    Raises:
        InstanceAlreadyRunningError: an instance with the new id is running.
        ValueError: ``event_id`` is not an activity's ``task_scheduled`` of the source, or
            the new id is the source's.
    """
    if new_instance_id is None:
        iid, last_seq, previous = uuid.uuid4().hex, 0, None  # a fresh id has no history
    else:
        iid = check_instance_id(new_instance_id)
        if iid == source:
            raise ValueError(
                f"a rerun of {source!r} is a new instance: give it another id (the source "
                "stays as it is)"
            )
        last_seq, previous = await startable(broker, iid)
    s = broker.subjects
    with publish_span(
        s.outbox_workflow(iid, record.app_id),
        s.outbox_workflow("*", record.app_id),
        name=f"rerun_workflow {record.name}",
        attributes={"jetloom.instance_id": iid, "jetloom.workflow.name": record.name,
                    "jetloom.rerun.source": source, "jetloom.rerun.event_id": event_id},
    ) as trace_headers:
        history = rerun_history(
            source, events, event_id,
            execution_id=uuid.uuid4().hex,
            now=datetime.now(UTC),
            new_input=to_json(input) if overwrite_input else None,
            traceparent=trace_headers.get("traceparent", ""),
            tracestate=trace_headers.get("tracestate", ""),
        )
        await _append_rerun(broker, iid, last_seq, previous, history)
    return iid


async def _append_rerun(
    broker: JetStreamBroker,
    iid: str,
    last_seq: int,
    previous: tuple[bytes, int] | None,
    history: list[HistoryEvent],
) -> None:
    """Write a rerun's history with the dispatches of its open activities and timers (one
    atomic batch, so a rerun exists whole or not at all), then its RUNNING record."""
    stored = await offload_all(broker.payloads, iid, history)
    started = stored[0]
    assert isinstance(started, ExecutionStarted)
    open_commands = [
        e for e in still_open(stored, stored) if not isinstance(e, TaskCancelRequested)
    ]
    dispatches = Dispatcher(broker.subjects, broker.outbox_ttl).for_task(
        iid, [], open_commands, dispatch_trace_headers(started)
    )
    messages = task_commits(stored, [], broker.nc.max_payload)
    try:
        seq = await broker.append(iid, last_seq, messages, dispatches)
    except AppendConflictError:
        raise started_meanwhile(iid) from None
    running = start_record(iid, started, seq, WorkflowStatus.RUNNING)  # a rerun has no parent
    await broker.put_record(iid, running, seq, history_seq_of, new=previous is None)
    if last_seq:
        await broker.compact_history(iid, seq - len(messages) + 1)
