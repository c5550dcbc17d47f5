"""The workflow pipeline: take work messages, group them by instance, run one workflow task
per instance at a time, acknowledge or hand back what was taken."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any

import structlog

from brokers import (
    MESSAGING_ERRORS,
    AppendConflictError,
    JetStreamBroker,
    PayloadTooLargeError,
    PullStream,
    WorkMessage,
)
from engine.worker.faults import crash_point
from engine.worker.firings import ScheduleFirings, fired_schedule
from engine.worker.projection import RecordProjector
from engine.worker.work_items import WorkReader
from engine.worker.workflow_task import WorkflowTasks
from observability import WorkflowTaskTrace

log = structlog.get_logger("jetloom.runtime")

TASK_ATTEMPTS = 8
"""Workflow task attempts after append conflicts before the messages are handed back."""
SCHEDULE_KEY = "schedule:"
"""Prefix of the keys under which a schedule's firings wait for each other (no instance id
has a colon)."""


async def settle_all(
    msgs: list[WorkMessage], *, nak_delay: float | None = None, confirm: bool = True
) -> None:
    """Acknowledge (or, with ``nak_delay``, hand back) ``msgs`` together; a message whose
    acknowledgement is lost is redelivered after its lease, and its effects deduplicated."""
    await asyncio.gather(
        *(m.settle(nak_delay=nak_delay, confirm=confirm) for m in msgs), return_exceptions=True
    )


class WorkflowPipeline:
    """Serves the workflows consumer (of the runtime's application) for one runtime.

    At most ``capacity`` work messages are held at once. Messages for an instance whose task
    is running wait for it and make up its next task, so a process never runs two tasks of
    one instance at once (between processes, optimistic concurrency decides).
    """

    def __init__(
        self,
        broker: JetStreamBroker,
        tasks: WorkflowTasks,
        projector: RecordProjector,
        reader: WorkReader,
        *,
        consumer: str,
        capacity: int,
        stall_retry_max: timedelta,
        confirm_acks: bool,
        spawn: Callable[[Coroutine[Any, Any, None]], None],
    ) -> None:
        self.broker = broker
        self.tasks = tasks
        self.projector = projector
        self.reader = reader
        self.consumer = consumer
        """The durable consumer served (``workflows``, or ``workflows-<app>``)."""
        self.capacity = capacity
        self.stall_retry_max = stall_retry_max
        self.confirm_acks = confirm_acks
        self._spawn = spawn
        self.firings = ScheduleFirings(broker)
        self._busy: dict[str, list[WorkMessage]] = {}
        """Instances with a workflow task running here, and the messages waiting for it."""
        self._stream: PullStream | None = None
        self.held = 0
        """Work messages held (being processed, or waiting for their instance's task)."""
        self.stopping = False

    async def serve(self) -> None:
        """Take work until ``stopping`` (or cancelled)."""
        s = self.broker.subjects
        stream = PullStream(self.broker.nc, s.work_stream, self.consumer, self.capacity)
        self._stream = stream
        await stream.start()
        try:
            while not self.stopping:
                msgs = await stream.next_batch(self.capacity)
                for instance_id, group in (await self._group(msgs, stream)).items():
                    self.held += len(group)
                    waiting = self._busy.get(instance_id)
                    if waiting is not None:
                        waiting.extend(group)  # the instance's running task takes them next
                    else:
                        self._busy[instance_id] = []
                        self._spawn(self._process_instance(instance_id, group))
        finally:
            await stream.stop()

    async def _group(
        self, msgs: list[WorkMessage], stream: PullStream
    ) -> dict[str, list[WorkMessage]]:
        """``msgs`` by instance; messages that can never be used are dead-lettered."""
        groups: dict[str, list[WorkMessage]] = {}
        for msg in msgs:
            schedule_id = fired_schedule(msg, self.broker)
            if schedule_id is not None:
                # A recurring schedule fired: its firings are handled one at a time, like an
                # instance's work (the key cannot be an instance id).
                groups.setdefault(SCHEDULE_KEY + schedule_id, []).append(msg)
                continue
            try:
                instance_id = await self._instance_of(msg)
            except Exception as exc:
                # e.g. the dead-letter stream has no leader right now: the message comes back
                # later; the loop must go on serving everyone else.
                log.error("work_item.dead_letter_failed", subject=msg.subject, error=repr(exc))
                self._spawn(self._give_back(msg, stream, delay=1.0))
                continue
            if instance_id is None:
                stream.release(1)  # dead-lettered and acknowledged
            else:
                groups.setdefault(instance_id, []).append(msg)
        return groups

    async def _instance_of(self, msg: WorkMessage) -> str | None:
        """The instance a work message is for; unusable ones go to the dead-letter stream."""
        instance_id, reason = self.reader.start_problem(msg)
        if reason is None:
            return instance_id
        is_start = self.broker.subjects.is_start(msg.subject)
        log.warning("start.dead_lettered" if is_start else "work_item.dead_lettered",
                    subject=msg.subject, reason=reason)
        await self.broker.dead_letter("start" if is_start else "inbox", msg, reason)
        await msg.settle(confirm=self.confirm_acks)
        return None

    async def _give_back(self, msg: WorkMessage, stream: PullStream, *, delay: float) -> None:
        """Ask for ``msg`` again after ``delay`` seconds and free its slot."""
        try:
            with contextlib.suppress(Exception):
                await msg.settle(nak_delay=delay, confirm=self.confirm_acks)
        finally:
            stream.release(1)

    async def _process_instance(self, instance_id: str, msgs: list[WorkMessage]) -> None:
        """Run workflow tasks for an instance (or firings of a schedule) until no more work
        waits for it."""
        handle = self._fire if instance_id.startswith(SCHEDULE_KEY) else self._run_task
        try:
            while msgs:
                try:
                    await handle(instance_id, msgs)
                except Exception as exc:  # never let one instance's trouble stop the worker
                    log.error("workflow.internal_error", instance_id=instance_id,
                              error=repr(exc))
                    await settle_all(msgs, nak_delay=1.0, confirm=self.confirm_acks)
                finally:
                    self.held -= len(msgs)
                    if self._stream is not None:
                        self._stream.release(len(msgs))
                msgs = self._busy.get(instance_id) or []
                self._busy[instance_id] = []
        finally:
            self._busy.pop(instance_id, None)

    async def _run_task(self, instance_id: str, msgs: list[WorkMessage]) -> None:
        """One workflow task, tried again after append conflicts; then settle ``msgs``."""
        cache = self.tasks.cache
        for attempt in range(TASK_ATTEMPTS):
            try:
                # observability: span, metrics, log context of this task
                with WorkflowTaskTrace(instance_id, msgs, self.consumer) as task_trace:
                    delay = await self.tasks.run(
                        instance_id, msgs, task_trace, may_skip_read=attempt == 0
                    )
            except AppendConflictError as conflict:
                # Another worker advanced this instance: reload its history and try again.
                cache.forget(instance_id)
                log.debug("workflow.append_conflict", instance_id=instance_id, attempt=attempt,
                          detail=str(conflict))
                continue
            except MESSAGING_ERRORS as exc:
                # The server is failing over or restarting: not the workflow's fault, so no
                # STALLED status and no growing back-off; try again shortly.
                cache.forget(instance_id)
                log.warning("workflow.transient_error", instance_id=instance_id,
                            error=repr(exc))
                await settle_all(msgs, nak_delay=0.5, confirm=self.confirm_acks)
                return
            except PayloadTooLargeError as exc:
                cache.forget(instance_id)
                if not await self._dead_letter_oversized_start(instance_id, msgs, exc):
                    await self._stall(instance_id, msgs, exc)
                return
            except Exception as exc:
                cache.forget(instance_id)
                await self._stall(instance_id, msgs, exc)
                return
            crash_point("before_ack")
            await settle_all(msgs, nak_delay=delay, confirm=self.confirm_acks)
            return
        cache.forget(instance_id)
        await settle_all(msgs, nak_delay=0.05, confirm=self.confirm_acks)

    async def _fire(self, key: str, msgs: list[WorkMessage]) -> None:
        """Start the instances of a schedule's firings, one after the other."""
        for msg in msgs:
            try:
                await self.firings.fire(msg)
            except MESSAGING_ERRORS as exc:
                log.warning("schedule.transient_error", schedule=key, error=repr(exc))
                await msg.settle(nak_delay=0.5, confirm=self.confirm_acks)
                continue
            except Exception as exc:
                longest = self.stall_retry_max.total_seconds()
                delay = min(0.5 * 2 ** (msg.num_delivered - 1), longest)
                log.error("schedule.firing_failed", schedule=key, error=repr(exc),
                          retry_in_s=delay)
                await msg.settle(nak_delay=delay, confirm=self.confirm_acks)
                continue
            await msg.settle(confirm=self.confirm_acks)

    async def _dead_letter_oversized_start(
        self, instance_id: str, msgs: list[WorkMessage], exc: Exception
    ) -> bool:
        """A start whose first history append exceeds the server's max payload can never run:
        dead-letter it (with the reason) instead of retrying forever."""
        if (await self.broker.last_history_seq(instance_id))[0]:
            return False  # the instance exists: a later task grew too large (stall, visible)
        starts = [m for m in msgs if self.broker.subjects.is_start(m.subject)]
        if not starts:
            return False
        reason = (
            f"the start of {instance_id!r} does not fit the server's max payload ({exc}); "
            "send a smaller input"
        )
        log.warning("start.dead_lettered", instance_id=instance_id, reason=reason)
        for msg in starts:
            await self.broker.dead_letter("start", msg, reason)
        for msg in msgs:
            await msg.settle(confirm=self.confirm_acks)
        return True

    async def _stall(self, instance_id: str, msgs: list[WorkMessage], exc: Exception) -> None:
        """A workflow task failed: show the instance as STALLED and retry later with back-off."""
        deliveries = max(m.num_delivered for m in msgs)
        delay = min(0.5 * 2 ** (deliveries - 1), self.stall_retry_max.total_seconds())
        log.error(
            "workflow.task_failed",
            instance_id=instance_id,
            error=str(exc),
            error_type=type(exc).__name__,
            retry_in_s=delay,
        )
        with contextlib.suppress(Exception):
            await self.projector.stalled(instance_id, exc)
        await settle_all(msgs, nak_delay=delay, confirm=self.confirm_acks)
