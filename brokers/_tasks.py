"""Stopping tasks that wait on NATS, even when a cancellation gets lost on the way.

On Python 3.11, ``asyncio.wait_for`` returns the result instead of raising ``CancelledError``
when the awaited future completes in the same loop iteration as the cancellation; nats-py waits
for every reply and every pulled message that way (``Subscription.next_msg``, ``request``), so
a task cancelled just as a message arrives goes on running as if nothing had been asked. A loop
that reads from NATS until cancelled then never stops, and whoever awaits it hangs.
``stop_tasks`` cancels again until the tasks have ended.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import structlog

__all__ = ["CANCEL_AGAIN_AFTER", "raise_if_cancelling", "stop_tasks"]

CANCEL_AGAIN_AFTER = 0.5
"""Seconds to wait for cancelled tasks to end before cancelling the ones still running again."""

_log = structlog.get_logger("jetloom.broker")


async def stop_tasks(tasks: Iterable[asyncio.Task[Any]], timeout: float | None = None) -> bool:
    """Cancel ``tasks`` and wait until they have ended, cancelling again any that go on
    running (a cancellation lost in nats-py), for at most ``timeout`` seconds (None: until
    they end). Their results and exceptions are not raised.

    Returns True if every task ended, False if some were still running at ``timeout``.
    """
    given = list(tasks)
    pending = {task for task in given if not task.done()}
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    while pending:
        for task in pending:
            task.cancel()
        wait = CANCEL_AGAIN_AFTER
        if deadline is not None:
            wait = min(wait, deadline - loop.time())
            if wait <= 0:
                _log.warning("tasks.still_running", tasks=sorted(t.get_name() for t in pending))
                return False
        _, pending = await asyncio.wait(pending, timeout=wait)
    for task in given:  # retrieved, so asyncio does not log them as never retrieved
        if not task.cancelled():
            task.exception()
    return True


def raise_if_cancelling() -> None:
    """Raise CancelledError if the current task was asked to stop.

    For a polling loop, between its rounds: a cancellation lost in nats-py (see above) still
    stops it.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
