"""Instance status as clients see it, and the record kept in the instances KV bucket."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import msgspec

from engine.core.events import NULL, ExecutionStarted, FailureDetails, ParentInfo
from engine.core.status import WorkflowStatus


class InstanceRecord(msgspec.Struct, omit_defaults=True):
    """The projection of one instance, stored under its id in the ``instances`` KV bucket.

    ``history_seq`` is the stream sequence of the last history event it reflects; a writer
    never replaces a record with one reflecting less history.
    """

    instance_id: str
    name: str
    status: str
    created_at: datetime
    last_updated_at: datetime
    execution_id: str = ""
    history_seq: int = 0
    input: msgspec.Raw = NULL
    output: msgspec.Raw = NULL
    custom_status: msgspec.Raw = NULL
    failure: FailureDetails | None = None
    parent_instance_id: str = ""
    parent: ParentInfo | None = None
    """On a child whose run has no history yet: the parent to report to, should the child be
    terminated before its run starts."""
    children: list[str] = []
    app_id: str = ""
    """The application whose runtimes run the instance ('': the default one): events for it go
    to that application's inbox subject."""


@dataclass(frozen=True)
class WorkflowState:
    """A snapshot of an instance, read without replaying it."""

    instance_id: str
    name: str
    runtime_status: WorkflowStatus
    created_at: datetime
    last_updated_at: datetime
    serialized_input: str | None = None
    """The input as JSON text (None unless fetched with payloads)."""
    serialized_output: str | None = None
    """The output as JSON text."""
    serialized_custom_status: str | None = None
    """The custom status as JSON text."""
    failure_details: FailureDetails | None = None
    """Why the instance failed or stalled."""

    @classmethod
    def from_record(cls, record: InstanceRecord, *, fetch_payloads: bool = True) -> WorkflowState:
        """Build the client view of a KV record."""

        def text(raw: msgspec.Raw) -> str | None:
            data = bytes(raw)
            return None if data in (b"", b"null") or not fetch_payloads else data.decode()

        return cls(
            instance_id=record.instance_id,
            name=record.name,
            runtime_status=WorkflowStatus(record.status),
            created_at=record.created_at,
            last_updated_at=record.last_updated_at,
            serialized_input=text(record.input),
            serialized_output=text(record.output),
            serialized_custom_status=text(record.custom_status),
            failure_details=record.failure,
        )


_record_encoder = msgspec.json.Encoder()
_record_decoder = msgspec.json.Decoder(InstanceRecord)


def encode_record(record: InstanceRecord) -> bytes:
    """JSON of a KV record."""
    return _record_encoder.encode(record)


def decode_record(data: bytes) -> InstanceRecord:
    """A KV record from JSON."""
    return _record_decoder.decode(data)


def history_seq_of(data: bytes) -> int:
    """The history sequence a stored record reflects (0 if it cannot be read)."""
    try:
        return decode_record(data).history_seq
    except msgspec.DecodeError:
        return 0


def start_record(
    instance_id: str,
    started: ExecutionStarted,
    history_seq: int,
    status: WorkflowStatus = WorkflowStatus.PENDING,
) -> bytes:
    """The record of a run as its start leaves it: PENDING until a worker picks it up, or
    ``status`` (RUNNING for a rerun, whose history is written whole at once)."""
    return encode_record(InstanceRecord(
        instance_id=instance_id,
        name=started.name,
        status=status.value,
        created_at=started.timestamp,
        last_updated_at=started.timestamp,
        execution_id=started.execution_id,
        history_seq=history_seq,
        input=started.input,
        parent_instance_id=started.parent.instance_id if started.parent else "",
        parent=started.parent,
        app_id=started.app_id,
    ))


def started_of_record(record: InstanceRecord) -> ExecutionStarted:
    """The ``execution_started`` of the run a PENDING or STALLED record shows, for a run that is
    ended before its start reached history (terminated before any worker could run it)."""
    return ExecutionStarted(
        timestamp=record.created_at, name=record.name, execution_id=record.execution_id,
        input=record.input, parent=record.parent, app_id=record.app_id,
    )


def run_seq_of(execution_id: str) -> Callable[[bytes], int]:
    """``history_seq_of`` as the run ``execution_id`` ranks a stored record.

    A client's start of a new run writes a PENDING record at the history sequence it was
    decided on, before any worker appends the run. That record outranks what the old run
    writes at the same sequence (a worker re-writing the old run's end must not hide the start).
    """

    def seq_of(data: bytes) -> int:
        try:
            record = decode_record(data)
        except msgspec.DecodeError:
            return 0
        newer_start = record.status == "PENDING" and record.execution_id != execution_id
        return record.history_seq + 1 if newer_start else record.history_seq

    return seq_of
