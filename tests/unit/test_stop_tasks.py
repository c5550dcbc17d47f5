"""Stopping tasks whose cancellation may get lost (brokers.stop_tasks)."""

from __future__ import annotations

import asyncio

from brokers import stop_tasks


async def test_a_task_that_drops_its_cancellation_is_cancelled_again() -> None:
    """The first cancellation is swallowed (as nats-py's ``wait_for`` can on Python 3.11);
    the task still ends, cancelled."""
    dropped = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            dropped.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    assert await stop_tasks([task])
    assert (True, True) == (dropped.is_set(), task.cancelled())


async def test_failures_of_the_stopped_tasks_are_not_raised() -> None:
    """A task that failed before it was stopped, and one that fails as it stops, are
    stopped without an error."""

    async def fails_now() -> None:
        raise ValueError("broken")

    async def fails_on_cancel() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise RuntimeError("broken on the way out") from None

    tasks = [asyncio.create_task(fails_now()), asyncio.create_task(fails_on_cancel())]
    await asyncio.sleep(0)
    assert await stop_tasks(tasks)
    assert [ValueError, RuntimeError] == [type(t.exception()) for t in tasks]


async def test_a_task_that_never_stops_is_given_up_at_the_timeout() -> None:
    """``stop_tasks`` returns False instead of hanging on a task that ignores every
    cancellation."""
    release = asyncio.Event()

    async def deaf() -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(deaf())
    await asyncio.sleep(0)
    assert not await stop_tasks([task], timeout=0.2)
    assert not task.done()
    release.set()
    await task
