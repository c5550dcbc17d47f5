"""Retention: purging a finished instance when the schedule its last workflow task set fires.

The schedule (``<prefix>.timer.<id>.retention``, an ``@at`` message schedule) is one of the
dispatches of the task that finished the run (see ``Dispatcher``); when it fires, the worker
that takes the ``purge`` work item removes the instance if that run is still its latest and
finished. No process scans for old instances.
"""

from __future__ import annotations

import msgspec
import structlog

from brokers import JetStreamBroker, WorkMessage
from engine.core.events import WorkItem, decode_work_item
from engine.core.state import decode_record
from engine.core.status import WorkflowStatus
from engine.purge import purge_finished

log = structlog.get_logger("jetloom.runtime")

_PURGE_MARK = b'"purge":true'


def purge_item(msg: WorkMessage) -> WorkItem | None:
    """The retention purge a work message asks for, or None if it is no purge."""
    if _PURGE_MARK not in msg.data:
        return None
    try:
        item = decode_work_item(msg.data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return item if item.purge else None


async def purge_when_due(broker: JetStreamBroker, instance_id: str, runs: set[str]) -> None:
    """Purge ``instance_id`` if its latest run is one of ``runs`` and has finished.

    A run started since (the id was started again) has a retention of its own; an instance
    purged already has nothing left to purge.
    """
    stored = await broker.get_record(instance_id)
    if stored is None:
        return
    record = decode_record(stored[0])
    if record.execution_id not in runs or not WorkflowStatus(record.status).is_terminal:
        log.info("workflow.retention_skipped", instance_id=instance_id, status=record.status)
        return
    purged = await purge_finished(broker, instance_id, recursive=True, running_children="keep")
    log.info("workflow.purged", instance_id=instance_id, status=record.status,
             instances=purged, reason="retention")
