"""Stopping a process on SIGTERM or SIGINT, the same way everywhere."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def stop_signal() -> Iterator[asyncio.Event]:
    """An event that SIGTERM or SIGINT sets while the block runs; the handlers are removed
    when it ends. Where the loop cannot take signal handlers (not the main thread, Windows)
    the event is only set by whoever else holds it."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for sig in STOP_SIGNALS:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        yield stop
    finally:
        for sig in installed:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)
