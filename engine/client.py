"""WorkflowClient: start, inspect and steer workflow instances."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Collection
from datetime import UTC, datetime, timedelta
from typing import Any

from brokers import (
    DEFAULT_THRESHOLD,
    Connection,
    JetStreamBroker,
    RecordWatch,
    Subjects,
    app_id_or_default,
    connect_nats,
)
from engine import client_schedules
from engine.client_rerun import rerun_from_event, rerun_source
from engine.client_starts import start_instance
from engine.client_terminate import terminate_unstarted
from engine.core.codec import to_json
from engine.core.errors import InstanceFinishedError, InstanceNotFoundError
from engine.core.events import (
    EventRaised,
    ExecutionResumed,
    ExecutionStarted,
    ExecutionSuspended,
    ExecutionTerminated,
    HistoryEvent,
    WorkItem,
    current_run,
    encode,
    history_events,
)
from engine.core.instance_ids import app_token, check_instance_id
from engine.core.schedules import WorkflowSchedule
from engine.core.state import InstanceRecord, WorkflowState, decode_record
from engine.core.status import WorkflowStatus
from engine.offload import offload, resolve, resolve_all
from engine.purge import purge_finished

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
        return await start_instance(
            self._broker, workflow, input=input, instance_id=instance_id,
            start_at=start_at, app_id=self.app_id if app_id is None else app_token(app_id),
        )

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
        """The instance's event log (its current run), oldest first; empty while its run has
        no history (a start no worker has run yet).

        Raises:
            InstanceNotFoundError: no such instance.
        """
        await self._ensure_ready()
        stored, record = await asyncio.gather(
            self._broker.load_history(check_instance_id(instance_id)),
            self._broker.get_record(instance_id),
        )
        if not stored and record is None:
            raise InstanceNotFoundError(f"no instance {instance_id!r}")
        events = current_run(history_events(item.data for item in stored))
        if record is not None and _not_run_yet(decode_record(record[0]), events):
            return []
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
        """Terminate an instance (and, with ``recursive``, its running child workflows).

        Any unfinished instance can be terminated. One whose run has not run a workflow task
        (no worker took its start yet, or none can: its workflow is hosted nowhere) ends here
        at once, or, for a child workflow (whose parent hears of its end), in the next
        workflow task a worker runs for it; the others end in their next workflow task, which
        records the termination without running the workflow's code if that code cannot run.

        Raises:
            InstanceNotFoundError: no such instance.
            InstanceFinishedError: the instance has completed, failed or been terminated.
        """
        terminate = ExecutionTerminated(
            timestamp=datetime.now(UTC), output=to_json(output), recursive=recursive
        )
        record = await self._unfinished_record(instance_id)
        if not await terminate_unstarted(self._broker, instance_id, record, terminate):
            await self._deliver(instance_id, record, terminate)

    async def purge_workflow(self, instance_id: str, *, recursive: bool = True) -> int:
        """Remove a finished or STALLED instance's history and state (and its children's, if
        recursive). A STALLED instance's work still on its way finds no instance and runs
        nothing.

        Returns:
            How many instances were purged.

        Raises:
            InstanceNotFoundError: no such instance.
            InstanceAlreadyRunningError: the instance is PENDING, RUNNING or SUSPENDED:
                terminate it first.
        """
        await self._ensure_ready()
        return await purge_finished(self._broker, check_instance_id(instance_id),
                                    recursive=recursive)

    # ---------------------------------------------------------------- rerunning

    async def rerun_workflow_from_event(
        self,
        source_instance_id: str,
        event_id: int,
        *,
        new_instance_id: str | None = None,
        input: Any = None,
        overwrite_input: bool = False,
    ) -> str:
        """Run a finished instance again from one of its activities, as a new instance.

        The new instance's history is the source's up to the activity scheduled at
        ``event_id`` (its position in ``get_history``: the ``#`` column of ``jetloom
        history``), with the workflow task that scheduled it. That activity runs again (with
        ``input`` when ``overwrite_input``), and the workflow code as deployed now carries on
        from there. The source is not changed. Activities scheduled together with it run
        again too (a fan-out); one of its children still running at that point cannot be
        rerun from.

        Returns:
            The new instance's id (``new_instance_id``, or a generated one).

        Raises:
            InstanceNotFoundError: no such source instance.
            InstanceAlreadyRunningError: the source has not finished, or an instance with the
                new id is running.
            ValueError: ``event_id`` is not an activity's ``task_scheduled`` of the source, or
                the new id is the source's.
        """
        await self._ensure_ready()
        source = check_instance_id(source_instance_id)
        record = await rerun_source(self._broker, source)
        events = await self.get_history(source)
        return await rerun_from_event(
            self._broker, source, record, events, event_id,
            new_instance_id=new_instance_id, input=input, overwrite_input=overwrite_input,
        )

    # ---------------------------------------------------------------- schedules

    async def create_schedule(
        self,
        schedule_id: str,
        workflow: Callable[..., Any] | str,
        *,
        cron: str | None = None,
        every: timedelta | None = None,
        input: Any = None,
        overlap: str = "skip",
        time_zone: str | None = None,
    ) -> None:
        """Start ``workflow`` on a recurring schedule, kept and fired by nats-server itself.

        Give ``cron`` (five fields, or six with seconds first, or an alias such as
        ``@daily``) or ``every`` (whole seconds). A cron expression is read in UTC, or as
        wall-clock times in ``time_zone`` (an IANA name such as ``"Europe/Amsterdam"``,
        daylight saving time included: a time the clocks skip does not fire, one they repeat
        fires twice). Each firing starts one instance, with ``input``, named
        ``<schedule_id>-<tick>`` (the tick in UTC, e.g. ``nightly-20261207T090000Z``), when a
        worker takes it: firings made while no worker runs wait for one. With
        ``overlap="skip"`` a firing starts nothing while the instance the previous one started
        has not finished; ``"allow"`` starts one on every tick.

        Raises:
            ScheduleAlreadyExistsError: a schedule with that id exists (delete it first).
            ValueError: an invalid id (1-40 letters, digits, '-', '_'), cron expression,
                interval or overlap, an unknown time zone or one with an interval (only cron
                schedules take one), or an input over the large payload threshold.
        """
        await self._ensure_ready()
        await client_schedules.create_schedule(
            self._broker, schedule_id, workflow, cron=cron, every=every,
            input=input, overlap=overlap, time_zone=time_zone, app_id=self.app_id,
        )

    async def list_schedules(self) -> list[WorkflowSchedule]:
        """Every recurring schedule, by id."""
        await self._ensure_ready()
        return await client_schedules.list_schedules(self._broker)

    async def pause_schedule(self, schedule_id: str) -> None:
        """Stop a schedule's firings until it is resumed (firings already made start
        nothing).

        Raises:
            ScheduleNotFoundError: no such schedule.
        """
        await self._ensure_ready()
        await client_schedules.pause_schedule(self._broker, schedule_id)

    async def resume_schedule(self, schedule_id: str) -> None:
        """Let a paused schedule fire again, from its next tick.

        Raises:
            ScheduleNotFoundError: no such schedule.
        """
        await self._ensure_ready()
        await client_schedules.resume_schedule(self._broker, schedule_id)

    async def delete_schedule(self, schedule_id: str) -> None:
        """Remove a schedule; the instances it started are not touched.

        Raises:
            ScheduleNotFoundError: no such schedule.
        """
        await self._ensure_ready()
        await client_schedules.delete_schedule(self._broker, schedule_id)

    async def _send(
        self, instance_id: str, event: HistoryEvent, *, msg_id: str | None = None
    ) -> None:
        record = await self._unfinished_record(instance_id)
        await self._deliver(instance_id, record, event, msg_id=msg_id)

    async def _unfinished_record(self, instance_id: str) -> InstanceRecord:
        """The record of an instance that takes events.

        Raises:
            InstanceNotFoundError: no such instance.
            InstanceFinishedError: it has completed, failed or been terminated.
        """
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
        return record

    async def _deliver(
        self,
        instance_id: str,
        record: InstanceRecord,
        event: HistoryEvent,
        *,
        msg_id: str | None = None,
    ) -> None:
        """Send ``event`` to the run ``record`` shows, through the instance's inbox."""
        item = WorkItem(instance_id, [event], record.execution_id)
        await self._broker.publish(
            self._broker.subjects.inbox(instance_id, record.app_id),
            encode(await offload(self._broker.payloads, instance_id, item)),
            msg_id=msg_id,
        )


def _not_run_yet(record: InstanceRecord, run: list[HistoryEvent]) -> bool:
    """True if ``record`` shows a run that is not in history yet (``run``, the last run
    stored, is empty or an earlier run of the id)."""
    waiting = (WorkflowStatus.PENDING.value, WorkflowStatus.STALLED.value)
    return record.status in waiting and not any(
        isinstance(e, ExecutionStarted) and e.execution_id == record.execution_id for e in run
    )
