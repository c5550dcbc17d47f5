"""Terminating a run that has not run a workflow task, as ``WorkflowClient.terminate_workflow``
does it where it can: its start (if history has none) and its termination appended at once,
and its record written, with no worker involved."""

from __future__ import annotations

from brokers import AppendConflictError, JetStreamBroker
from engine.core.events import (
    ExecutionStarted,
    ExecutionTerminated,
    HistoryEvent,
    TaskCommit,
    decode_commit,
    encode,
    run_is_finished,
)
from engine.core.results import termination
from engine.core.state import InstanceRecord, encode_record, run_seq_of, started_of_record
from engine.core.status import WorkflowStatus
from engine.offload import offload, offload_all


async def terminate_unstarted(
    broker: JetStreamBroker, iid: str, record: InstanceRecord, terminate: ExecutionTerminated
) -> bool:
    """End a run that has not run a workflow task: append its termination (and, if it
    has no history yet, its start, as the record shows it) and write the record. False
    if the run has run, a worker took its start meanwhile (the append conflicted), or it
    is a child's (a worker ends it, so that its parent hears of it)."""
    if record.status not in (WorkflowStatus.PENDING.value, WorkflowStatus.STALLED.value):
        return False
    if record.parent is not None:
        # A child's end is reported to its parent, which only a worker's dispatch does:
        # the terminate goes to the child's inbox, and a worker ends the run at once.
        return False
    last_seq, last_data = await broker.last_history_seq(iid)
    last = [] if last_data is None else decode_commit(last_data).events
    if last_seq == record.history_seq and (not last or run_is_finished(last)):
        # its start is still on its way to a worker (or cannot be run by any)
        events: list[HistoryEvent] = [started_of_record(record)]
    elif (
        len(last) == 1
        and isinstance(last[0], ExecutionStarted)
        and last[0].execution_id == record.execution_id
    ):
        events = []  # a start due later (start_at): its timer finds the run ended
    else:
        return False
    ended = termination(terminate, terminate.timestamp)
    stored = await offload_all(broker.payloads, iid, [*events, *ended.new_events])
    try:
        seq = await broker.commit(iid, last_seq, [encode(TaskCommit(stored))])
    except AppendConflictError:
        return False
    if events and last_seq:
        await broker.compact_history(iid, seq)  # the finished run it replaced
    record.status, record.output, record.failure = ended.status, ended.output, None
    record.history_seq, record.last_updated_at = seq, terminate.timestamp
    record = await offload(broker.payloads, iid, record)
    await broker.put_record(iid, encode_record(record), seq, run_seq_of(record.execution_id))
    return True
