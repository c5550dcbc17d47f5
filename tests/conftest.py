"""Shared fixtures: a real nats-server per test session on a free loopback port."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


from brokers._server import EmbeddedNatsServer, free_port  # noqa: E402
from observability import configure_logging  # noqa: E402

# Every level, so that tests can look for debug lines (a runtime configures INFO only when the
# process has not configured logging itself).
configure_logging(level="DEBUG")

NatsServer = EmbeddedNatsServer
__all__ = ["EmbeddedNatsServer", "NatsServer", "free_port"]


@pytest.fixture(scope="session")
def nats_server() -> Iterator[EmbeddedNatsServer]:
    """One nats-server for the test session."""
    server = EmbeddedNatsServer().start()
    yield server
    server.cleanup()


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
async def broker(nats_url: str, prefix: str) -> AsyncIterator[object]:
    """A broker on the test's namespace with its topology created."""
    from brokers import JetStreamBroker, Subjects, connect_nats

    nc = await connect_nats(nats_url)
    b = JetStreamBroker(nc, Subjects(prefix))
    await b.ensure_topology()
    yield b
    await nc.close()


@pytest.fixture
async def client(nats_url: str, prefix: str) -> AsyncIterator[object]:
    """A WorkflowClient on the test's namespace."""
    from engine import WorkflowClient

    c = await WorkflowClient.connect(nats_url, prefix=prefix)
    yield c
    await c.close()
