"""Subprocesses the tests start: their stdout lines can be awaited; they are stopped by PID."""

from __future__ import annotations

import argparse
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


# ------------------------------------------------------------------ worker scripts


async def start_worker_script(
    script: Path,
    nats_url: str,
    prefix: str,
    name: str,
    *options: str,
    log_path: Path,
    env: dict[str, str] | None = None,
) -> asyncio.subprocess.Process:
    """Start a worker script (``--nats-url --prefix --worker-name`` and ``options``) with its
    stdout piped and its stderr in ``log_path``."""
    with log_path.open("wb") as stderr:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            str(script),
            "--nats-url",
            nats_url,
            "--prefix",
            prefix,
            "--worker-name",
            name,
            *options,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            env=child_env() if env is None else env,
            cwd=str(ROOT),
        )


def worker_arguments(description: str) -> argparse.ArgumentParser:
    """The options every test worker script takes: where, who, what it hosts, its limits."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--nats-url", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--worker-name", required=True)
    parser.add_argument("--workflows", action="store_true", help="host the test workflows")
    parser.add_argument("--activities", action="store_true", help="host the test activities")
    parser.add_argument("--record", type=Path, help="effect log the activities append to")
    parser.add_argument("--lease", type=float, default=30.0, help="activity lease in seconds")
    parser.add_argument("--max-activities", type=int, default=100)
    return parser


def parse_worker_arguments(
    parser: argparse.ArgumentParser, argv: list[str] | None = None
) -> argparse.Namespace:
    """Parse, insisting that the worker hosts something and that activities have a record."""
    args = parser.parse_args(argv)
    if not (args.activities or args.workflows):
        parser.error("host something: --activities and/or --workflows")
    if args.activities and args.record is None:
        parser.error("--activities needs --record FILE")
    return args


def append_line(path: Path, line: str) -> None:
    """Append one line in a single O_APPEND write, so lines of competing workers never mix."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)
