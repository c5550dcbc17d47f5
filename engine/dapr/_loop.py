"""An event loop on a thread of its own, for Dapr's synchronous runtime and client."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from engine.worker.loop import loop_factory

T = TypeVar("T")


class LoopThread:
    """Runs coroutines on a private event loop in a daemon thread.

    Synchronous code calls ``run(coro)`` and blocks until it is done; the loop keeps running
    between calls (a runtime serves from it in the background).
    """

    def __init__(self, name: str, *, max_workers: int | None = None) -> None:
        factory = loop_factory() or asyncio.new_event_loop
        self._loop = factory()
        if max_workers is not None:  # sync activities run in the loop's default executor
            self._loop.set_default_executor(
                concurrent.futures.ThreadPoolExecutor(max_workers, thread_name_prefix=name)
            )
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The thread's loop."""
        return self._loop

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for its result (in any thread but the loop's)."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a Dapr client or runtime call cannot wait on its own loop")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            if future.done():  # the coroutine's own TimeoutError
                raise
            future.cancel()
            raise TimeoutError(f"no answer within {timeout}s") from None

    def stop(self) -> None:
        """Let the thread pool finish, then stop the loop and its thread (from any thread but
        the loop's, also from inside another running loop)."""
        if self._loop.is_closed():
            return
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                self.run(self._loop.shutdown_default_executor(), timeout=30)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()
