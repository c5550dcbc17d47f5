"""The instance record: the readable projection of a run's history in the instances KV bucket."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import structlog

from brokers import JetStreamBroker
from engine.core.events import NULL, ExecutionStarted, HistoryEvent
from engine.core.results import TaskResult, failure_from
from engine.core.state import (
    InstanceRecord,
    decode_record,
    encode_record,
    history_seq_of,
    run_seq_of,
)
from engine.core.status import WorkflowStatus
from engine.offload import offload
from engine.worker.history_cache import CachedRun

log = structlog.get_logger("jetloom.runtime")

RUNNING = WorkflowStatus.RUNNING.value
COMPLETED = WorkflowStatus.COMPLETED.value
TERMINATED = WorkflowStatus.TERMINATED.value


class RecordProjector:
    """Writes instance records. Records carry the history sequence they reflect, and a writer
    never replaces a record that reflects more history (compare-and-set on the KV revision)."""

    def __init__(self, broker: JetStreamBroker) -> None:
        self.broker = broker

    async def project(
        self,
        instance_id: str,
        started: ExecutionStarted,
        result: TaskResult,
        children: list[str],
        last_seq: int,
        now: datetime,
        next_run: list[HistoryEvent],
        cached: CachedRun | None = None,
        *,
        repair: bool = False,
    ) -> None:
        """Write the record of the run ``started`` began, as ``result`` leaves it.

        With ``cached``, a record whose visible fields did not change is not written again,
        and the write uses the KV revision this worker wrote last (one round trip). With
        ``repair`` (a task that appended nothing), a record that already reflects ``last_seq``
        is left as it is, so its ``last_updated_at`` keeps the time of the last change.
        """
        status = result.status
        input_raw = started.input
        execution_id = started.execution_id
        output, failure = result.output, result.failure
        if next_run:
            new_start = next_run[0]
            assert isinstance(new_start, ExecutionStarted)
            status, input_raw, execution_id = RUNNING, new_start.input, new_start.execution_id
            output, failure = msgspec.Raw(b"null"), None
        record = InstanceRecord(
            instance_id=instance_id,
            name=started.name,
            status=status,
            created_at=started.timestamp,
            last_updated_at=now,
            execution_id=execution_id,
            history_seq=last_seq,
            input=input_raw,
            output=output if status in (COMPLETED, TERMINATED) else NULL,
            custom_status=result.custom_status or NULL,
            failure=failure,
            parent_instance_id=started.parent.instance_id if started.parent else "",
            children=children,
            app_id=started.app_id,
        )
        visible = (
            status, bytes(record.output), bytes(record.custom_status), failure,
            len(record.children), execution_id,
        )
        if cached is not None and cached.projected == visible:
            return
        record = await offload(self.broker.payloads, instance_id, record)
        revision = await self.broker.put_record(
            instance_id, encode_record(record), last_seq, run_seq_of(execution_id),
            revision=None if cached is None or repair else cached.kv_revision,
            keep_equal=repair,
        )
        if cached is not None:
            cached.projected, cached.kv_revision = visible, revision

    async def stalled(self, instance_id: str, exc: Exception) -> None:
        """Show a running instance as STALLED with the error of its failing workflow task."""
        current = await self.broker.get_record(instance_id)
        if current is None:
            return
        record = decode_record(current[0])
        if WorkflowStatus(record.status).is_terminal:
            return
        record.status = WorkflowStatus.STALLED.value
        record.failure = failure_from(exc)
        record.last_updated_at = datetime.now(UTC)
        await self.broker.put_record(
            instance_id, encode_record(record), record.history_seq, history_seq_of,
            revision=current[1],
        )

    async def awaiting_start(self, instance_id: str) -> tuple[InstanceRecord, int] | None:
        """The instance's record and its revision if it waits for its run to start: PENDING
        (a client started it, no worker has taken the start yet) or STALLED (no worker could
        run it yet)."""
        stored = await self.broker.get_record(instance_id)
        if stored is None:
            return None
        record = decode_record(stored[0])
        waiting = (WorkflowStatus.PENDING.value, WorkflowStatus.STALLED.value)
        return (record, stored[1]) if record.status in waiting else None
