"""Subprocesses the tests start: their stdout lines can be awaited; they are stopped by PID."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child process: this Python's bin dir on PATH (nats-server), the
    repository on PYTHONPATH, unbuffered output, plus ``extra``."""
    return {
        **os.environ,
        "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]),
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


class LineProcess:
    """A subprocess whose stdout lines are collected as they come, so a test can wait for one
    (a readiness line, a "started" signal) instead of sleeping."""

    line_timeout: float = 15
    """How long ``wait_for_line`` waits when not told."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self.proc = proc
        self.lines: list[str] = []
        self._new_line = asyncio.Event()
        self._reader = asyncio.create_task(self._read_stdout())

    async def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            self.lines.append(raw.decode().rstrip("\n"))
            self._new_line.set()
        self._new_line.set()

    def exit_detail(self) -> str:
        """What to add when the process ends without the awaited line (e.g. its log)."""
        return ""

    async def wait_for_line(
        self, match: Callable[[str], bool], timeout: float | None = None
    ) -> str:
        """The first stdout line ``match`` accepts, within ``timeout`` seconds."""
        async with asyncio.timeout(self.line_timeout if timeout is None else timeout):
            seen = 0
            while True:
                for line in self.lines[seen:]:
                    if match(line):
                        return line
                seen = len(self.lines)
                if self._reader.done():  # stdout closed: the process has ended
                    raise RuntimeError(
                        f"{self.name} exited ({self.proc.returncode}) without the awaited line; "
                        f"stdout {self.lines}{self.exit_detail()}"
                    )
                self._new_line.clear()
                await self._new_line.wait()

    async def kill(self) -> None:
        """SIGKILL by PID: no graceful shutdown, in-flight work is abandoned."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()
        await self._reader

    async def stop(self) -> None:
        """SIGTERM by PID (graceful shutdown), then SIGKILL if it lingers."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.send_signal(signal.SIGKILL)
                await self.proc.wait()
        await self._reader
