"""Stopping activities whose workflow cancelled them or was terminated.

A workflow task that cancels activities (``Task.cancel()``, ``when_any(...,
cancel_losers=True)``) or ends a run by termination publishes a ``CancelRequest`` on
``<prefix>.cancel.<instance_id>`` (see ``Dispatcher``). The request is stored in the history
stream (one day, like other dispatch copies) and heard at once by every activity worker, which
subscribes to ``<prefix>.cancel.*``:

- a running activity of that run is stopped: an ``async def`` one is cancelled
  (``asyncio.CancelledError`` at its next ``await``), a plain ``def`` one sees
  ``ctx.is_cancelled`` turn true and ``ctx.heartbeat()`` raise;
- an activity task taken later is not run. Requests heard are remembered; a task that may
  predate this worker's listening (stored in the work stream before it subscribed or last
  reconnected) is looked up in the stream, so a worker that was down when the request went
  out learns of it when it takes the task; later tasks cost no lookup.

A request names every task the run cancelled so far (or, empty, every activity of a
terminated run), so the last one stored for an instance is all a worker needs to read.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import msgspec
import structlog

from brokers import CancelListener, JetStreamBroker
from engine.core.events import ActivityTask, CancelRequest, decode_cancel_request

log = structlog.get_logger("jetloom.runtime")

HEARD_LIMIT = 100_000
"""Instances whose last cancel request a worker remembers (the oldest are forgotten first;
a forgotten one is looked up again if a task of it is taken)."""


@dataclass(eq=False, slots=True)
class Cancellable:
    """What a running activity offers to be stopped: a flag its context reads, and (for an
    ``async def`` activity) the asyncio task to cancel."""

    execution_id: str
    task_id: int
    context_flag: list[bool]
    """One element, set to True when cancelled (shared with the ActivityContext)."""
    aio_task: asyncio.Task[Any] | None = None
    cancel_sent: bool = False
    """``aio_task.cancel()`` was called (the caller must ``uncancel`` it)."""

    def cancel(self) -> None:
        """Stop the activity: set the flag, cancel its asyncio task if it has one."""
        self.context_flag[0] = True
        if self.aio_task is not None and not self.cancel_sent:
            self.cancel_sent = True
            self.aio_task.cancel()


class ActivityCancels:
    """The cancel requests an activity worker has heard, and the activities it runs."""

    def __init__(self, broker: JetStreamBroker) -> None:
        self.broker = broker
        self._heard: OrderedDict[str, CancelRequest] = OrderedDict()
        self._running: dict[str, list[Cancellable]] = {}
        self._listener: CancelListener | None = None

    async def start(self) -> None:
        """Begin listening for cancel requests."""
        if self._listener is None:
            self._listener = await self.broker.listen_for_cancels(self._heard_request)

    async def stop(self) -> None:
        """Stop listening."""
        if self._listener is not None:
            await self._listener.stop()
            self._listener = None

    def _heard_request(self, data: bytes) -> None:
        try:
            request = decode_cancel_request(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        self._heard[request.instance_id] = request
        self._heard.move_to_end(request.instance_id)
        while len(self._heard) > HEARD_LIMIT:
            self._heard.popitem(last=False)
        for running in self._running.get(request.instance_id, []):
            if request.covers(running.execution_id, running.task_id):
                log.info("activity.cancel_requested", instance_id=request.instance_id,
                         task_id=running.task_id)
                running.cancel()

    async def cancelled_before_start(self, task: ActivityTask, work_seq: int) -> bool:
        """True if ``task`` (stored in the work stream at sequence ``work_seq``) was
        cancelled."""
        heard = self._heard.get(task.instance_id)
        if heard is not None and heard.covers(task.execution_id, task.task_id):
            return True
        listener = self._listener
        if listener is not None and work_seq > await listener.heard_since():
            return False  # any request for it was sent while this worker was listening
        data = await self.broker.last_cancel(task.instance_id)
        if data is None:
            return False
        try:
            return decode_cancel_request(data).covers(task.execution_id, task.task_id)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return False

    def register(
        self, task: ActivityTask, flag: list[bool], aio_task: asyncio.Task[Any] | None
    ) -> Cancellable:
        """Register an activity while it runs, so that a request heard meanwhile stops it
        (``unregister`` it when it ends)."""
        entry = Cancellable(task.execution_id, task.task_id, flag, aio_task)
        heard = self._heard.get(task.instance_id)
        if heard is not None and heard.covers(task.execution_id, task.task_id):
            flag[0] = True  # heard since the task was checked: it does not start
        self._running.setdefault(task.instance_id, []).append(entry)
        return entry

    def unregister(self, instance_id: str, entry: Cancellable) -> None:
        """The activity of ``entry`` has ended."""
        entries = self._running.get(instance_id)
        if entries is None:
            return
        if entry in entries:
            entries.remove(entry)
        if not entries:
            del self._running[instance_id]
