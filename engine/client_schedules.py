"""Recurring schedules as ``WorkflowClient`` manages them: a schedule's KV record
(``engine.core.schedules``) and the message schedule nats-server fires, created, listed,
paused, resumed and deleted together."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from brokers import JetStreamBroker
from engine.core.codec import to_json
from engine.core.errors import ScheduleAlreadyExistsError, ScheduleNotFoundError
from engine.core.events import ScheduledStart, encode
from engine.core.registry import workflow_name
from engine.core.schedules import (
    ScheduleRecord,
    WorkflowSchedule,
    check_overlap,
    check_schedule_id,
    decode_schedule,
    encode_schedule,
    schedule_spec,
)


async def create_schedule(
    broker: JetStreamBroker,
    schedule_id: str,
    workflow: Callable[..., Any] | str,
    *,
    cron: str | None,
    every: timedelta | None,
    input: Any,
    overlap: str,
    time_zone: str | None,
    app_id: str,
) -> None:
    """Store schedule ``schedule_id`` of ``workflow``, then its message schedule.

    Raises:
        ScheduleAlreadyExistsError: a schedule with that id exists.
        ValueError: an invalid id, spec, overlap or time zone, or an input over the large
            payload threshold.
    """
    check_schedule_id(schedule_id)
    spec = schedule_spec(cron=cron, every=every, time_zone=time_zone)
    raw = to_json(input)
    if len(raw) > broker.payloads.threshold:
        raise ValueError(
            f"the input of schedule {schedule_id!r} is {len(raw)} bytes of JSON; a "
            f"schedule's input is kept inline (at most {broker.payloads.threshold})"
        )
    record = ScheduleRecord(
        schedule_id=schedule_id,
        workflow=workflow_name(workflow),
        schedule=spec,
        created_at=datetime.now(UTC),
        time_zone=time_zone,
        input=raw,
        overlap=check_overlap(overlap),
        app_id=app_id,
    )
    if not await broker.put_schedule(schedule_id, encode_schedule(record), None):
        raise ScheduleAlreadyExistsError(
            f"schedule {schedule_id!r} exists; delete it first, or choose another id"
        )
    try:
        await _put_schedule_message(broker, record)
    except BaseException:
        await broker.delete_schedule(schedule_id)
        raise


async def list_schedules(broker: JetStreamBroker) -> list[WorkflowSchedule]:
    """Every recurring schedule, by id."""
    records = [decode_schedule(value) for value in await broker.list_schedules()]
    return [
        WorkflowSchedule.from_record(r) for r in sorted(records, key=lambda r: r.schedule_id)
    ]


async def pause_schedule(broker: JetStreamBroker, schedule_id: str) -> None:
    """Mark the schedule paused and remove its message schedule.

    Raises:
        ScheduleNotFoundError: no such schedule.
    """
    await _change_schedule(broker, schedule_id, paused=True)
    await broker.remove_schedule_message(schedule_id)


async def resume_schedule(broker: JetStreamBroker, schedule_id: str) -> None:
    """Mark the schedule running and put its message schedule back.

    Raises:
        ScheduleNotFoundError: no such schedule.
    """
    record = await _change_schedule(broker, schedule_id, paused=False)
    await _put_schedule_message(broker, record)


async def delete_schedule(broker: JetStreamBroker, schedule_id: str) -> None:
    """Remove the schedule's message schedule, then its record.

    Raises:
        ScheduleNotFoundError: no such schedule.
    """
    if await broker.get_schedule(check_schedule_id(schedule_id)) is None:
        raise _no_schedule(schedule_id)
    await broker.remove_schedule_message(schedule_id)
    await broker.delete_schedule(schedule_id)


async def _change_schedule(
    broker: JetStreamBroker, schedule_id: str, *, paused: bool
) -> ScheduleRecord:
    """Set the record's ``paused``, retried until no other writer came between; the record."""
    check_schedule_id(schedule_id)
    while True:
        stored = await broker.get_schedule(schedule_id)
        if stored is None:
            raise _no_schedule(schedule_id)
        record = msgspec.structs.replace(decode_schedule(stored[0]), paused=paused)
        if await broker.put_schedule(schedule_id, encode_schedule(record), stored[1]):
            return record


async def _put_schedule_message(broker: JetStreamBroker, record: ScheduleRecord) -> None:
    """The message schedule that nats-server fires: its body names the schedule, its spec
    and time zone, its target is the schedule's work subject."""
    await broker.put_schedule_message(
        record.schedule_id,
        encode(ScheduledStart(record.schedule_id, record.schedule, record.time_zone)),
        record.schedule,
        broker.subjects.outbox_workflow(record.schedule_id, record.app_id),
        record.time_zone,
    )


def _no_schedule(schedule_id: str) -> ScheduleNotFoundError:
    return ScheduleNotFoundError(
        f"no schedule {schedule_id!r}; check the id (jetloom schedule list shows schedules)"
    )
