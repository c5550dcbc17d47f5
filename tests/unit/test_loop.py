"""The event loop worker processes run on (engine.worker.loop)."""

from __future__ import annotations

import asyncio

import uvloop

from engine.worker.loop import loop_factory, run


def test_workers_run_on_uvloop_when_it_is_installed() -> None:
    """``run`` drives a coroutine to its result on a uvloop loop, like ``asyncio.run``."""

    async def which_loop() -> str:
        await asyncio.sleep(0)
        return type(asyncio.get_running_loop()).__module__

    assert uvloop.new_event_loop is loop_factory()
    assert run(which_loop()).startswith("uvloop")
