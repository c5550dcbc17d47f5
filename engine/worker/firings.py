"""Recurring schedules on the worker side: each firing starts one instance.

nats-server fires a schedule (``<prefix>.schedule.<id>``) by itself, publishing its body to
``<prefix>.outbox.workflow.<id>``, which reaches the ``workflows`` consumer like any work item.
A worker that takes a firing derives the tick from ``Nats-Schedule-Next`` (in the cron's time
zone, which the body carries) and so the instance id (``<schedule id>-<tick>``), reads the
schedule's record, and starts the instance unless the schedule is paused or deleted, the firing
is older than the last one handled, or the previous instance still runs and overlaps are
skipped. The record names the instance before it is started (compare-and-set), so of two
workers handling one firing, or two firings at once, one decides; a firing handled again starts
the same id, which a start deduplicates.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import msgspec
import structlog

from brokers import JetStreamBroker, WorkMessage
from engine.core.events import ExecutionStarted, WorkItem, decode_scheduled_start, encode
from engine.core.schedules import (
    ScheduleRecord,
    decode_schedule,
    encode_schedule,
    firing_instance_id,
    tick_of,
)
from engine.core.state import decode_record, start_record
from engine.core.status import WorkflowStatus

log = structlog.get_logger("jetloom.schedules")

SCHEDULER_HEADER = "Nats-Scheduler"
NEXT_HEADER = "Nats-Schedule-Next"
DECIDE_ATTEMPTS = 20
"""Compare-and-set attempts on a schedule's record before the firing is handed back."""


def fired_schedule(msg: WorkMessage, broker: JetStreamBroker) -> str | None:
    """The id of the schedule whose firing ``msg`` is, or None for any other work."""
    scheduler = msg.headers.get(SCHEDULER_HEADER, "")
    if not broker.subjects.is_schedule(scheduler):
        return None
    return scheduler.rsplit(".", 1)[-1]


class ScheduleFirings:
    """Starts the instances of recurring schedules' firings."""

    def __init__(self, broker: JetStreamBroker) -> None:
        self.broker = broker

    async def fire(self, msg: WorkMessage) -> str | None:
        """Handle one firing; the id of the instance it started (None: none, and why is
        logged). Raises on messaging errors (the firing is then delivered again)."""
        try:
            firing = decode_scheduled_start(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.warning("schedule.invalid_firing", subject=msg.subject, error=str(exc))
            return None
        try:
            next_at = datetime.fromisoformat(msg.headers[NEXT_HEADER])
            tick = tick_of(firing.schedule, next_at, firing.time_zone)
        except (KeyError, ValueError) as exc:  # no tick can be derived from spec and header
            log.warning("schedule.invalid_firing", schedule_id=firing.schedule_id,
                        error=str(exc))
            return None
        instance_id = firing_instance_id(firing.schedule_id, tick)
        record = await self._decide(firing.schedule_id, instance_id, tick)
        if record is None:
            return None
        await self._start(record, instance_id)
        return instance_id

    async def _decide(
        self, schedule_id: str, instance_id: str, tick: datetime
    ) -> ScheduleRecord | None:
        """The schedule's record once it names ``instance_id`` as its last instance, or None
        if this firing starts nothing."""
        for _ in range(DECIDE_ATTEMPTS):
            stored = await self.broker.get_schedule(schedule_id)
            if stored is None:
                log.info("schedule.firing_dropped", schedule_id=schedule_id, reason="deleted")
                return None
            record = decode_schedule(stored[0])
            if record.last_instance_id == instance_id:
                return record  # decided before (this firing, handled again)
            why = await self._why_not(record, tick)
            if why is not None:
                log.info("schedule.firing_skipped", schedule_id=schedule_id,
                         instance_id=instance_id, reason=why)
                return None
            decided = msgspec.structs.replace(
                record, last_instance_id=instance_id, last_fired_at=tick
            )
            if await self.broker.put_schedule(schedule_id, encode_schedule(decided), stored[1]):
                return decided
            # another firing or a pause came first: look again
        raise RuntimeError(f"schedule {schedule_id!r}: too much contention on its record")

    async def _why_not(self, record: ScheduleRecord, tick: datetime) -> str | None:
        """Why a firing at ``tick`` starts nothing (None: it starts an instance)."""
        if record.paused:
            return "paused"
        if record.last_fired_at is not None and tick <= record.last_fired_at:
            return "older than the last firing"
        if record.overlap == "skip" and record.last_instance_id:
            stored = await self.broker.get_record(record.last_instance_id)
            if stored is not None:
                status = WorkflowStatus(decode_record(stored[0]).status)
                if not status.is_terminal:
                    return f"{record.last_instance_id} is still {status.value}"
        return None

    async def _start(self, record: ScheduleRecord, instance_id: str) -> None:
        """Start ``instance_id`` unless it exists: a PENDING record, then the start as work
        (as ``WorkflowClient.schedule_new_workflow`` does for a new id), both idempotent."""
        started = ExecutionStarted(
            timestamp=datetime.now(UTC),
            name=record.workflow,
            execution_id=uuid.uuid5(uuid.NAMESPACE_URL, f"jetloom:schedule:{instance_id}").hex,
            input=record.input,
            app_id=record.app_id,
        )
        claimed = await self.broker.claim_record(
            instance_id, start_record(instance_id, started, 0), None
        )
        if claimed is None:
            stored = await self.broker.get_record(instance_id)
            if stored is None:
                return
            existing = decode_record(stored[0])
            if existing.status != WorkflowStatus.PENDING.value or (
                existing.execution_id != started.execution_id
            ):
                return  # started before, and taken by a worker since
        s = self.broker.subjects
        await self.broker.publish(
            s.outbox_workflow(instance_id, record.app_id),
            encode(WorkItem(instance_id, [started], started.execution_id, after_seq=0)),
            msg_id=f"{instance_id}:start:0",
            headers={"Nats-TTL": self.broker.outbox_ttl},
        )
        log.info("schedule.fired", schedule_id=record.schedule_id, instance_id=instance_id,
                 workflow=record.workflow)
