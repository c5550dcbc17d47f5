"""The event loop worker processes run on: uvloop where it is installed, else asyncio's own.

A worker spends a large part of its time in the event loop itself (scheduling callbacks and
tasks, socket writes); uvloop does that work in C. On the order-saga benchmark it lowers the
workers' CPU per saga by about a tenth. Workflow and activity code does not notice the
difference, so it is chosen where the process starts, never inside the runtime.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """``uvloop.new_event_loop`` when uvloop is installed; None (asyncio's default) otherwise."""
    try:
        import uvloop
    except ImportError:  # not on this platform (Windows) or not installed
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on a new loop from ``loop_factory``, like ``asyncio.run``.

    Exported as ``engine.run_service``: ``run_service(main())`` starts a worker process on
    uvloop where it is installed.
    """
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
