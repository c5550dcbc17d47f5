"""Starting an instance, as ``WorkflowClient.schedule_new_workflow`` does it: whether its id
may start a run, the PENDING record claimed and the start sent to the workers as work, or a
start due later written with its durable timer."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from brokers import (
    AppendConflictError,
    DispatchMessage,
    JetStreamBroker,
    schedule_headers,
)
from engine.core.codec import to_json
from engine.core.errors import InstanceAlreadyRunningError
from engine.core.events import (
    ExecutionStarted,
    TaskCommit,
    WorkItem,
    decode_commit,
    encode,
    run_is_finished,
)
from engine.core.instance_ids import check_instance_id, new_instance_id
from engine.core.registry import workflow_name
from engine.core.state import decode_record, history_seq_of, start_record
from engine.core.status import WorkflowStatus
from engine.offload import offload
from observability import publish_span


async def start_instance(
    broker: JetStreamBroker,
    workflow: Callable[..., Any] | str,
    *,
    input: Any,
    instance_id: str | None,
    start_at: datetime | None,
    app_id: str,
) -> str:
    """Start a new instance of ``workflow`` (a function or registered name) in application
    ``app_id``; its id.

    Raises:
        InstanceAlreadyRunningError: an instance with that id has not finished.
        InvalidInstanceIdError: the id is not 1-64 letters, digits, '-' or '_'.
        ValueError: an invalid workflow name, or ``start_at`` is not timezone-aware.
    """
    name = workflow_name(workflow)
    if start_at is not None and start_at.tzinfo is None:
        raise ValueError("start_at must be timezone-aware (use UTC)")
    if instance_id is None:  # a fresh id has no history to read
        iid, last_seq, previous = new_instance_id(), 0, None
    else:
        iid = check_instance_id(instance_id)
        last_seq, previous = await startable(broker, iid)
    now = datetime.now(UTC)
    s = broker.subjects
    # observability: a PRODUCER span for the start; the run records its context, so the
    # whole instance joins the caller's trace (or starts one at this span).
    with publish_span(
        s.outbox_workflow(iid, app_id),
        s.outbox_workflow("*", app_id),
        name=f"start_workflow {name}",
        attributes={"jetloom.instance_id": iid, "jetloom.workflow.name": name},
    ) as trace_headers:
        started = ExecutionStarted(
            timestamp=now,
            name=name,
            execution_id=uuid.uuid4().hex,
            input=to_json(input),
            scheduled_start_at=start_at,
            traceparent=trace_headers.get("traceparent", ""),
            tracestate=trace_headers.get("tracestate", ""),
            app_id=app_id,
        )
        stored = await offload(broker.payloads, iid, started)
        if start_at is not None and start_at > now:
            seq = await _append_scheduled_start(broker, iid, last_seq, stored, start_at)
            await broker.put_record(
                iid, start_record(iid, stored, seq), seq, history_seq_of,
                new=not last_seq,
            )
        else:
            await _send_start(broker, iid, stored, last_seq, previous)
    return iid


async def startable(
    broker: JetStreamBroker, iid: str
) -> tuple[int, tuple[bytes, int] | None]:
    """The last history sequence of ``iid`` and its record as read (with its revision),
    if a new run may start.

    Raises:
        InstanceAlreadyRunningError: its run has not finished, or a start is on its way.
    """
    (last_seq, last_data), stored_record = await asyncio.gather(
        broker.last_history_seq(iid), broker.get_record(iid)
    )
    if last_data is not None and not run_is_finished(decode_commit(last_data).events):
        raise _still_running(iid)
    if stored_record is not None:
        pending = decode_record(stored_record[0])
        if pending.status == WorkflowStatus.PENDING.value and pending.history_seq == last_seq:
            raise _still_running(iid)  # started at this very history, not yet picked up
    return last_seq, stored_record


def started_meanwhile(iid: str) -> InstanceAlreadyRunningError:
    """The error of a start that lost to a concurrent one (its record or append conflicted)."""
    return InstanceAlreadyRunningError(f"instance {iid!r} was started by someone else just now")


async def _send_start(
    broker: JetStreamBroker,
    iid: str,
    stored: ExecutionStarted,
    last_seq: int,
    previous: tuple[bytes, int] | None,
) -> None:
    """Claim the PENDING record, then send the start to the workers as work.

    The workers append ``execution_started`` together with the run's first task. The
    record comes first, written only if it is still as read, so of concurrent starts one
    wins and a worker that takes the start always finds the record.
    """
    claimed = await broker.claim_record(
        iid, start_record(iid, stored, last_seq),
        None if previous is None else previous[1],
    )
    if claimed is None:
        raise started_meanwhile(iid)
    # One message on the instance's outbox subject, sourced into the work stream like
    # every other dispatch. Its id names this run, so a retry of the publish is dropped by
    # the stream, and a start of the same id after a purge (same history sequence, within
    # the duplicate window) is not. Of concurrent starts, the record claim picked one.
    item = WorkItem(iid, [stored], stored.execution_id, after_seq=last_seq)
    try:
        await broker.publish(
            broker.subjects.outbox_workflow(iid, stored.app_id), encode(item),
            msg_id=f"{iid}:start:{stored.execution_id}",
            headers={"Nats-TTL": broker.outbox_ttl},
        )
    except BaseException:
        # No start went out: do not leave a PENDING record that nothing will run.
        await broker.release_record(iid, None if previous is None else previous[0], claimed)
        raise


async def _append_scheduled_start(
    broker: JetStreamBroker,
    iid: str,
    last_seq: int,
    stored: ExecutionStarted,
    start_at: datetime,
) -> int:
    """Append the ``execution_started`` of a run due later, with a durable timer (a message
    schedule) that asks for its first task at ``start_at``; its stream sequence."""
    s = broker.subjects
    trigger = encode(WorkItem(iid, [], stored.execution_id))
    timer = DispatchMessage(
        s.timer(iid, "start"),
        trigger,
        schedule_headers(start_at, s.outbox_workflow(iid, stored.app_id)),
    )
    try:
        seq = await broker.append(iid, last_seq, [encode(TaskCommit([stored]))], [timer])
    except AppendConflictError:
        raise started_meanwhile(iid) from None
    if last_seq:
        await broker.compact_history(iid, seq)
    return seq


def _still_running(iid: str) -> InstanceAlreadyRunningError:
    return InstanceAlreadyRunningError(
        f"instance {iid!r} is still running; wait for it, terminate it, "
        "or choose another instance id"
    )
