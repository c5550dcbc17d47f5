"""Reading work messages: public start events and work items, as events for a workflow task."""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

import msgspec
import structlog

from brokers import Subjects, WorkMessage
from engine.core.errors import InvalidInstanceIdError, WorkflowNotRegisteredError
from engine.core.events import (
    ExecutionStarted,
    HistoryEvent,
    decode_start_request,
    decode_work_item,
)
from engine.core.instance_ids import check_instance_id, instance_id_for_message
from engine.core.registry import Registry

log = structlog.get_logger("jetloom.runtime")


class Work(NamedTuple):
    """What one work message brings to its instance's next workflow task."""

    start: ExecutionStarted | None
    """A run's start, if the message is one."""
    events: list[HistoryEvent]
    """The events it carries."""
    run_id: str
    """The run they are for (empty: whichever run is current)."""
    after_seq: int
    """For a start: the history sequence it was decided at (see ``WorkItem.after_seq``)."""
    from_client: bool = False
    """The start is a client's (``schedule_new_workflow``): its PENDING record came first."""


class WorkReader:
    """Turns work messages of one prefix into ``Work`` for the workflows this runtime hosts
    (for application ``app``: a start event runs there)."""

    def __init__(self, subjects: Subjects, registry: Registry, app: str = "") -> None:
        self.subjects = subjects
        self.registry = registry
        self.app = app

    def start_problem(self, msg: WorkMessage) -> tuple[str | None, str | None]:
        """(the instance id, None) for a usable start or work item; (None, why) for a message
        that can never be used and belongs in the dead-letter stream."""
        s = self.subjects
        if not s.is_start(msg.subject):
            try:
                decode_work_item(msg.data)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                return None, f"work item is not a valid WorkItem: {exc}"
            return s.instance_of(msg.subject), None
        workflow_name = msg.subject.rsplit(".", 1)[-1]
        try:
            request = decode_start_request(msg.data)
            instance_id = request.instance_id or self.generated_instance_id(msg)
            check_instance_id(instance_id)
            self.registry.workflow(workflow_name)
        except msgspec.ValidationError as exc:  # a DecodeError subclass: must come first
            return None, (
                f"start event has the wrong shape ({exc}); expected "
                '{"instance_id": "<optional id>", "input": <any JSON>}'
            )
        except msgspec.DecodeError as exc:
            return None, f"start event is not valid JSON: {exc}"
        except (InvalidInstanceIdError, WorkflowNotRegisteredError) as exc:
            return None, str(exc)
        return instance_id, None

    def generated_instance_id(self, msg: WorkMessage) -> str:
        """The id of a start event without one: stable across redeliveries and, when the
        publisher sets Nats-Msg-Id, across its retries too."""
        msg_id = msg.headers.get("Nats-Msg-Id")
        if msg_id:
            return instance_id_for_message("msg-id", msg_id)
        return instance_id_for_message(self.subjects.work_stream, msg.stream_seq)

    def read(self, msg: WorkMessage, now: datetime) -> Work:
        """What ``msg`` brings: a start event becomes a run's ``execution_started`` (stamped
        ``now``, its run id derived from the message), a work item its events."""
        s = self.subjects
        if s.is_start(msg.subject):
            request = decode_start_request(msg.data)
            name = msg.subject.rsplit(".", 1)[-1]
            started = ExecutionStarted(
                timestamp=now,
                name=name,
                execution_id=instance_id_for_message(s.work_stream + ".exec", msg.stream_seq),
                input=request.input,
                version=self.registry.workflow(name).version,
                traceparent=msg.headers.get("traceparent", ""),
                tracestate=msg.headers.get("tracestate", ""),
                app_id=self.app,
            )
            return Work(started, [], "", 0)
        try:
            item = decode_work_item(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.error("work_item.invalid", subject=msg.subject, error=str(exc))
            return Work(None, [], "", 0)
        start = next((e for e in item.events if isinstance(e, ExecutionStarted)), None)
        if start is not None and not start.version and self.registry.has_workflow(start.name):
            start = msgspec.structs.replace(
                start, version=self.registry.workflow(start.name).version
            )
        events: list[HistoryEvent] = [
            e for e in item.events if not isinstance(e, ExecutionStarted)
        ]
        # A start in a work item without a parent is a client's; a child's names its parent.
        from_client = start is not None and start.parent is None
        return Work(start, events, item.execution_id, item.after_seq, from_client)

    def only_fresh_starts(self, msgs: list[WorkMessage], work: list[Work]) -> bool:
        """True if every message starts a run of an id that had no history when it was sent:
        a start event without an instance id of its own, or a start work item decided on an
        empty history (``after_seq`` 0)."""
        for msg, (start, events, _, after_seq, _) in zip(msgs, work, strict=True):
            if start is None or events or after_seq:
                return False
            if self.subjects.is_start(msg.subject):
                try:
                    if decode_start_request(msg.data).instance_id:
                        return False
                except (msgspec.DecodeError, msgspec.ValidationError):
                    return False
        return True
