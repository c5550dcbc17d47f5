"""Purging finished instances: history, record, payloads and child workflows, as the client's
``purge_workflow`` and a runtime's retention do it."""

from __future__ import annotations

from brokers import JetStreamBroker
from engine.core.errors import InstanceAlreadyRunningError, InstanceNotFoundError
from engine.core.events import history_events
from engine.core.state import decode_record
from engine.core.status import WorkflowStatus
from engine.offload import refs_in


async def purge_finished(
    broker: JetStreamBroker,
    instance_id: str,
    *,
    recursive: bool = True,
    running_children: str = "refuse",
) -> int:
    """Remove a finished (or STALLED) instance: its history, timers, record and the payloads
    it stored, and, if ``recursive``, its child workflows (only children it started itself: a
    rerun's history names its source's children, which stay).

    ``running_children`` says what to do with a child that has not finished: ``"refuse"``
    (raise, as the client does) or ``"keep"`` (leave it; retention purges it when it
    finishes).

    Returns:
        How many instances were purged.

    Raises:
        InstanceNotFoundError: no such instance.
        InstanceAlreadyRunningError: the instance (or, when refusing, a child) is PENDING,
            RUNNING or SUSPENDED.
    """
    stored = await broker.get_record(instance_id)
    if stored is None:
        raise InstanceNotFoundError(f"no instance {instance_id!r} to purge")
    record = decode_record(stored[0])
    status = WorkflowStatus(record.status)
    if not (status.is_terminal or status is WorkflowStatus.STALLED):
        raise InstanceAlreadyRunningError(
            f"instance {instance_id!r} is {record.status}; terminate it before purging"
        )
    purged = 0
    if recursive:
        for child_id in record.children:
            child = await broker.get_record(child_id)
            if child is None:
                continue
            child_record = decode_record(child[0])
            if child_record.parent_instance_id != instance_id:
                continue  # not started by this instance
            if running_children == "keep" and not WorkflowStatus(
                child_record.status
            ).is_terminal:
                continue
            purged += await purge_finished(
                broker, child_id, recursive=True, running_children=running_children
            )
    # Payloads this instance stored in the Object Store go with it.
    history = history_events(item.data for item in await broker.load_history(instance_id))
    names = {ref.name for ref in refs_in([*history, record], scope=instance_id)}
    await broker.purge_instance(instance_id)
    await broker.payloads.delete(names)
    return purged + 1
