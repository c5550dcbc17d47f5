"""WorkflowClient: start, inspect and steer workflow instances."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Collection
from datetime import UTC, datetime
from typing import Any

from brokers import (
    DEFAULT_THRESHOLD,
    AppendConflictError,
    Connection,
    DispatchMessage,
    JetStreamBroker,
    RecordWatch,
    Subjects,
    app_id_or_default,
    connect_nats,
    schedule_headers,
)
from engine.core.codec import to_json
from engine.core.errors import (
    InstanceAlreadyRunningError,
    InstanceFinishedError,
    InstanceNotFoundError,
)
from engine.core.events import (
    EventRaised,
    ExecutionResumed,
    ExecutionStarted,
    ExecutionSuspended,
    ExecutionTerminated,
    HistoryEvent,
    TaskCommit,
    WorkItem,
    current_run,
    decode_commit,
    encode,
    history_events,
    run_is_finished,
)
from engine.core.instance_ids import app_token, check_instance_id, new_instance_id
from engine.core.registry import check_name
from engine.core.state import (
    InstanceRecord,
    WorkflowState,
    decode_record,
    encode_record,
    history_seq_of,
)
from engine.core.status import WorkflowStatus
from engine.offload import offload, refs_in, resolve, resolve_all
from observability import publish_span

STEERING_TIMEOUT = 60.0
"""Seconds ``pause_workflow``/``resume_workflow`` wait by default for the instance to take the
new status (Dapr's default API timeout)."""


class WorkflowClient:
    """Starts workflows and reads or changes their state, over NATS JetStream.

    Create with ``await WorkflowClient.connect(url)``; close with ``await client.close()``
    or use ``async with``.
    """

    def __init__(
        self,
        nc: Connection,
        *,
        prefix: str | None = None,
        owns_connection: bool = True,
        large_payload_threshold: int = DEFAULT_THRESHOLD,
        app_id: str | None = None,
    ) -> None:
        self._broker = JetStreamBroker(
            nc, Subjects.of(prefix), large_payload_threshold=large_payload_threshold
        )
        self.app_id = app_token(app_id_or_default(app_id))
        """The application new instances run in unless a start names another ('': none)."""
        self._owns_connection = owns_connection
        self._ready = False
        # One watch of the instances bucket for all of this client's waits, started by the
        # first wait.
        self._watch = RecordWatch(self._broker)

    @classmethod
    async def connect(
        cls,
        nats_url: str | None = None,
        *,
        prefix: str | None = None,
        create_streams: bool = True,
        large_payload_threshold: int = DEFAULT_THRESHOLD,
        app_id: str | None = None,
        **options: Any,
    ) -> WorkflowClient:
        """Connect to NATS (``nats_url`` or NATS_URL) and make sure the streams exist.

        ``prefix`` defaults to JETLOOM_PREFIX, then ``jetloom``; ``options`` go to
        ``nats.connect``, e.g. ``**brokers.NatsAuth(...).connect_options()`` for credentials
        and TLS (else NATS_CREDS, NATS_CA, ...). A user without permission to create streams
        passes ``create_streams=False`` (the workers create them). Inputs and event data whose
        JSON is larger than ``large_payload_threshold`` bytes are sent through the Object Store
        (see ``WorkflowRuntime``). ``app_id`` (default APP_ID, else none) is the application
        whose runtimes run the instances this client starts, unless a start names another.
        """
        client = cls(
            await connect_nats(nats_url, **options),
            prefix=prefix,
            large_payload_threshold=large_payload_threshold,
            app_id=app_id,
        )
        client._ready = not create_streams
        try:
            await client._ensure_ready()
        except BaseException:
            await client.close()
            raise
        return client

    async def close(self) -> None:
        """Stop the client's watch (waits still open raise ``WatchClosedError``) and close the
        connection (if the client opened it)."""
        await self._watch.close()
        if self._owns_connection and not self._broker.nc.is_closed:
            await self._broker.nc.close()

    @property
    def is_connected(self) -> bool:
        """True while the client's connection to NATS is up (it reconnects by itself)."""
        return bool(self._broker.nc.is_connected)

    async def __aenter__(self) -> WorkflowClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _ensure_ready(self) -> None:
        if not self._ready:
            await self._broker.ensure_topology()
            self._ready = True

    # ---------------------------------------------------------------- starting

    async def schedule_new_workflow(
        self,
        workflow: Callable[..., Any] | str,
        *,
        input: Any = None,
        instance_id: str | None = None,
        start_at: datetime | None = None,
        app_id: str | None = None,
    ) -> str:
        """Start a new instance of ``workflow`` (a function or registered name).

        An id whose instance is still running is refused; an id whose instance has finished
        starts a fresh run. The instance runs in application ``app_id`` (default: the
        client's), taken only by that application's runtimes.

        Returns:
            The instance id.

        Raises:
            InstanceAlreadyRunningError: an instance with that id has not finished.
            InvalidInstanceIdError: the id is not 1-64 letters, digits, '-' or '_'.
        """
        await self._ensure_ready()
        name = check_name(
            "workflow",
            workflow
            if isinstance(workflow, str)
            else getattr(workflow, "__jetloom_name__", workflow.__name__),
        )
        if start_at is not None and start_at.tzinfo is None:
            raise ValueError("start_at must be timezone-aware (use UTC)")
        if instance_id is None:  # a fresh id has no history to read
            iid, last_seq, previous = new_instance_id(), 0, None
        else:
            iid = check_instance_id(instance_id)
            last_seq, previous = await self._startable(iid)
        now = datetime.now(UTC)
        s = self._broker.subjects
        app = self.app_id if app_id is None else app_token(app_id)
        # observability: a PRODUCER span for the start; the run records its context, so the
        # whole instance joins the caller's trace (or starts one at this span).
        with publish_span(
            s.outbox_workflow(iid, app),
            s.outbox_workflow("*", app),
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
                app_id=app,
            )
            stored = await offload(self._broker.payloads, iid, started)
            if start_at is not None and start_at > now:
                seq = await self._append_scheduled_start(iid, last_seq, stored, start_at)
                await self._broker.put_record(
                    iid, _pending_record(iid, stored, seq), seq, history_seq_of,
                    new=not last_seq,
                )
            else:
                await self._send_start(iid, stored, last_seq, previous)
        return iid

    async def _startable(self, iid: str) -> tuple[int, tuple[bytes, int] | None]:
        """The last history sequence of ``iid`` and its record as read (with its revision),
        if a new run may start.

        Raises:
            InstanceAlreadyRunningError: its run has not finished, or a start is on its way.
        """
        (last_seq, last_data), stored_record = await asyncio.gather(
            self._broker.last_history_seq(iid), self._broker.get_record(iid)
        )
        if last_data is not None and not run_is_finished(decode_commit(last_data).events):
            raise _still_running(iid)
        if stored_record is not None:
            pending = decode_record(stored_record[0])
            if pending.status == WorkflowStatus.PENDING.value and pending.history_seq == last_seq:
                raise _still_running(iid)  # started at this very history, not yet picked up
        return last_seq, stored_record

    async def _send_start(
        self,
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
        claimed = await self._broker.claim_record(
            iid, _pending_record(iid, stored, last_seq),
            None if previous is None else previous[1],
        )
        if claimed is None:
            raise InstanceAlreadyRunningError(
                f"instance {iid!r} was started by someone else just now"
            )
        # One message on the instance's outbox subject, sourced into the work stream like
        # every other dispatch. Its id is the same for everyone who read the history at this
        # sequence: a second copy (a retry) is dropped by the stream.
        item = WorkItem(iid, [stored], stored.execution_id, after_seq=last_seq)
        s = self._broker.subjects
        try:
            sent = await self._broker.publish_unique(
                s.outbox_workflow(iid, stored.app_id), encode(item),
                msg_id=f"{iid}:start:{last_seq}",
                headers={"Nats-TTL": self._broker.outbox_ttl},
            )
        except BaseException:
            # No start went out: do not leave a PENDING record that nothing will run.
            await self._broker.release_record(
                iid, None if previous is None else previous[0], claimed
            )
            raise
        if not sent:
            raise _still_running(iid)  # an earlier start decided at this sequence is on its way

    async def _append_scheduled_start(
        self, iid: str, last_seq: int, stored: ExecutionStarted, start_at: datetime
    ) -> int:
        """Append the ``execution_started`` of a run due later, with a durable timer (a message
        schedule) that asks for its first task at ``start_at``; its stream sequence."""
        s = self._broker.subjects
        trigger = encode(WorkItem(iid, [], stored.execution_id))
        timer = DispatchMessage(
            s.timer(iid, "start"),
            trigger,
            schedule_headers(start_at, s.outbox_workflow(iid, stored.app_id)),
        )
        try:
            seq = await self._broker.append(
                iid, last_seq, [encode(TaskCommit([stored]))], [timer]
            )
        except AppendConflictError:
            raise InstanceAlreadyRunningError(
                f"instance {iid!r} was started by someone else just now"
            ) from None
        if last_seq:
            await self._broker.compact_history(iid, seq)
        return seq

    # ----------------------------------------------------------------- reading

    async def get_workflow_state(
        self, instance_id: str, *, fetch_payloads: bool = True
    ) -> WorkflowState | None:
        """The instance's current state, or None if there is no such instance."""
        await self._ensure_ready()
        stored = await self._broker.get_record(check_instance_id(instance_id))
        if stored is None:
            return None
        return await self._state_of(stored[0], fetch_payloads)

    async def _state_of(self, value: bytes, fetch_payloads: bool) -> WorkflowState:
        record = decode_record(value)
        if fetch_payloads:
            record = await resolve(self._broker.payloads, record)
        return WorkflowState.from_record(record, fetch_payloads=fetch_payloads)

    async def wait_for_workflow_start(
        self, instance_id: str, *, timeout: float | None = 60, fetch_payloads: bool = False
    ) -> WorkflowState:
        """Wait (by watching, not polling) until the instance has left PENDING.

        An id with no instance yet is waited for (it may be started meanwhile). ``timeout``
        None waits without limit.

        Raises:
            TimeoutError: it did not start within ``timeout`` seconds.
            InstanceNotFoundError: the instance was purged while waiting.
        """
        return await self.wait_for_workflow_status(
            instance_id, lambda s: s is not WorkflowStatus.PENDING, timeout=timeout,
            fetch_payloads=fetch_payloads,
        )

    async def wait_for_workflow_completion(
        self, instance_id: str, *, timeout: float | None = 60, fetch_payloads: bool = True
    ) -> WorkflowState:
        """Wait (by watching, not polling) until the instance is COMPLETED, FAILED or TERMINATED.

        An id with no instance yet is waited for (it may be started meanwhile). All waits of
        one client share one watch of the instances bucket. ``timeout`` None waits without
        limit.

        Raises:
            TimeoutError: it did not finish within ``timeout`` seconds.
            InstanceNotFoundError: the instance was purged while waiting.
        """
        return await self.wait_for_workflow_status(
            instance_id, lambda s: s.is_terminal, timeout=timeout, fetch_payloads=fetch_payloads
        )

    async def wait_for_workflow_status(
        self,
        instance_id: str,
        status: Collection[WorkflowStatus] | Callable[[WorkflowStatus], bool],
        *,
        timeout: float | None = 60,
        fetch_payloads: bool = False,
    ) -> WorkflowState:
        """Wait (by watching, not polling) until the instance has one of the statuses in
        ``status`` (or one that ``status``, a predicate, accepts); its state then.

        The current status counts: an instance already there returns at once. An id with no
        instance yet is waited for. ``timeout`` None waits without limit.

        Raises:
            TimeoutError: no such status within ``timeout`` seconds.
            InstanceNotFoundError: the instance was purged while waiting.
        """
        accept = status if callable(status) else frozenset(status).__contains__
        return await self._wait_until(instance_id, accept, timeout, fetch_payloads)

    async def _wait_until(
        self,
        instance_id: str,
        done: Callable[[WorkflowStatus], bool],
        timeout: float | None,
        fetch_payloads: bool,
    ) -> WorkflowState:
        """The first state of the instance that ``done`` accepts, from its current record on.

        The subscription to the client's shared watch is registered before the current record
        is read, so a change between the read and the wait cannot be missed; the watch checks
        each change of this instance as it arrives and wakes this call only for one that
        ``done`` accepts (or a purge).
        """
        await self._ensure_ready()
        check_instance_id(instance_id)

        def reached(value: bytes) -> bool:
            return done(WorkflowStatus(decode_record(value).status))

        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                async with self._watch.subscribe(instance_id, accept=reached) as changes:
                    value = None if changes.current is None else changes.current.value
                    while value is None or not reached(value):
                        value = (await changes.next()).value
                        if value is None:
                            raise InstanceNotFoundError(
                                f"instance {instance_id!r} was purged while waiting for it"
                            )
                return await self._state_of(value, fetch_payloads)
        except TimeoutError:
            if not deadline.expired():
                raise  # a request of the wait timed out, not the wait itself
            raise TimeoutError(
                f"instance {instance_id!r} did not reach the awaited status within {timeout}s"
            ) from None

    async def list_workflows(
        self, *, status: WorkflowStatus | None = None, workflow_name: str | None = None
    ) -> AsyncIterator[WorkflowState]:
        """Every instance, optionally only those with a status and/or workflow name."""
        await self._ensure_ready()
        for value in await self._broker.list_records():
            record = decode_record(value)
            if status is not None and record.status != status.value:
                continue
            if workflow_name is not None and record.name != workflow_name:
                continue
            yield WorkflowState.from_record(record, fetch_payloads=False)

    async def get_history(self, instance_id: str) -> list[HistoryEvent]:
        """The instance's event log (its current run), oldest first."""
        await self._ensure_ready()
        stored = await self._broker.load_history(check_instance_id(instance_id))
        if not stored:
            raise InstanceNotFoundError(f"no instance {instance_id!r}")
        events = current_run(history_events(item.data for item in stored))
        return await resolve_all(self._broker.payloads, events)

    # ---------------------------------------------------------------- steering

    async def raise_workflow_event(
        self, instance_id: str, event_name: str, *, data: Any = None
    ) -> None:
        """Send an external event to a running instance.

        Raises:
            InstanceNotFoundError: no such instance.
            InstanceFinishedError: the instance has completed, failed or been terminated.
        """
        event_id = uuid.uuid4().hex
        event = EventRaised(
            timestamp=datetime.now(UTC),
            name=event_name,
            data=to_json(data),
            event_id=event_id,
        )
        await self._send(instance_id, event, msg_id=event_id)

    async def pause_workflow(
        self, instance_id: str, *, reason: str = "", timeout: float | None = STEERING_TIMEOUT
    ) -> None:
        """Suspend an instance: it holds new events until resumed.

        Returns once the instance is SUSPENDED (or has finished or stalled meanwhile), waiting
        up to ``timeout`` seconds (None: no limit; 0: return once the request is sent).

        Raises:
            TimeoutError: no worker took the pause in time (is a runtime hosting it running?).
        """
        await self._send(
            instance_id, ExecutionSuspended(timestamp=datetime.now(UTC), reason=reason)
        )
        await self._await_steering(
            instance_id, timeout, "SUSPENDED",
            lambda s: s in (WorkflowStatus.SUSPENDED, WorkflowStatus.STALLED) or s.is_terminal,
        )

    async def resume_workflow(
        self, instance_id: str, *, reason: str = "", timeout: float | None = STEERING_TIMEOUT
    ) -> None:
        """Resume a suspended instance.

        Returns once the instance is no longer SUSPENDED, waiting up to ``timeout`` seconds
        (None: no limit; 0: return once the request is sent).

        Raises:
            TimeoutError: no worker took the resume in time.
        """
        await self._send(instance_id, ExecutionResumed(timestamp=datetime.now(UTC), reason=reason))
        await self._await_steering(
            instance_id, timeout, "resumed", lambda s: s is not WorkflowStatus.SUSPENDED
        )

    async def _await_steering(
        self,
        instance_id: str,
        timeout: float | None,
        what: str,
        reached: Callable[[WorkflowStatus], bool],
    ) -> None:
        if timeout is not None and timeout <= 0:
            return
        try:
            await self._wait_until(instance_id, reached, timeout, False)
        except TimeoutError:
            raise TimeoutError(
                f"instance {instance_id!r} was not {what} within {timeout}s; is a workflow "
                "runtime hosting it running?"
            ) from None

    async def terminate_workflow(
        self, instance_id: str, *, output: Any = None, recursive: bool = True
    ) -> None:
        """Terminate an instance (and, with ``recursive``, its running child workflows)."""
        await self._send(
            instance_id,
            ExecutionTerminated(
                timestamp=datetime.now(UTC), output=to_json(output), recursive=recursive
            ),
        )

    async def purge_workflow(self, instance_id: str, *, recursive: bool = True) -> int:
        """Remove a finished instance's history and state (and its children's, if recursive).

        Returns:
            How many instances were purged.

        Raises:
            InstanceNotFoundError: no such instance.
            InstanceAlreadyRunningError: the instance has not finished.
        """
        await self._ensure_ready()
        stored = await self._broker.get_record(check_instance_id(instance_id))
        if stored is None:
            raise InstanceNotFoundError(f"no instance {instance_id!r} to purge")
        record = decode_record(stored[0])
        if not WorkflowStatus(record.status).is_terminal:
            raise InstanceAlreadyRunningError(
                f"instance {instance_id!r} is {record.status}; terminate it before purging"
            )
        purged = 0
        if recursive:
            for child in record.children:
                with contextlib.suppress(InstanceNotFoundError):
                    purged += await self.purge_workflow(child, recursive=True)
        # Payloads this instance stored in the Object Store go with it.
        history = history_events(
            item.data for item in await self._broker.load_history(instance_id)
        )
        names = {ref.name for ref in refs_in([*history, record], scope=instance_id)}
        await self._broker.purge_instance(instance_id)
        await self._broker.payloads.delete(names)
        return purged + 1

    async def _send(
        self, instance_id: str, event: HistoryEvent, *, msg_id: str | None = None
    ) -> None:
        await self._ensure_ready()
        stored = await self._broker.get_record(check_instance_id(instance_id))
        if stored is None:
            raise InstanceNotFoundError(
                f"no instance {instance_id!r}; check the id (jetloom list shows instances)"
            )
        record = decode_record(stored[0])
        if WorkflowStatus(record.status).is_terminal:
            raise InstanceFinishedError(
                f"instance {instance_id!r} is {record.status}: it takes no more events; "
                "start a new run with schedule_new_workflow",
                record.status,
            )
        item = WorkItem(instance_id, [event], record.execution_id)
        await self._broker.publish(
            self._broker.subjects.inbox(instance_id, record.app_id),
            encode(await offload(self._broker.payloads, instance_id, item)),
            msg_id=msg_id,
        )


def _still_running(iid: str) -> InstanceAlreadyRunningError:
    return InstanceAlreadyRunningError(
        f"instance {iid!r} is still running; wait for it, terminate it, "
        "or choose another instance id"
    )


def _pending_record(iid: str, started: ExecutionStarted, history_seq: int) -> bytes:
    """The record of a run that is started and not yet picked up by a worker."""
    return encode_record(InstanceRecord(
        instance_id=iid,
        name=started.name,
        status=WorkflowStatus.PENDING.value,
        created_at=started.timestamp,
        last_updated_at=started.timestamp,
        execution_id=started.execution_id,
        history_seq=history_seq,
        input=started.input,
        app_id=started.app_id,
    ))
