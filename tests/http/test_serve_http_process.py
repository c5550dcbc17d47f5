"""``jetloom serve-http`` as a real subprocess, talked to over HTTP with aiohttp."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import ClientSession

from brokers._server import free_port
from engine import WorkflowClient
from tests.http.http_support import Api

ROOT = Path(__file__).resolve().parents[2]


@contextlib.asynccontextmanager
async def serve_http_process(nats_url: str, prefix: str) -> AsyncIterator[tuple[Api, list[str]]]:
    """A serve-http process on a free port: an Api on it, and (after exit) its code and output."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "JETLOOM_PREFIX")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "engine.cli",
        "serve-http",
        "--port",
        str(port),
        "--nats-url",
        nats_url,
        "--prefix",
        prefix,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    ended: list[str] = []
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert f"listening on http://127.0.0.1:{port}" in line, line
        async with ClientSession() as session:
            yield Api(session, f"http://127.0.0.1:{port}"), ended
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)  # by PID
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
        ended += [str(proc.returncode), out.decode()]


@pytest.fixture
async def served(nats_url: str, prefix: str) -> AsyncIterator[tuple[Api, list[str]]]:
    """serve-http running for one test."""
    async with serve_http_process(nats_url, prefix) as running:
        yield running


class TestServeHttpProcess:
    @pytest.mark.usefixtures("runtime")
    async def test_start_and_get_over_http(
        self, served: tuple[Api, list[str]], client: WorkflowClient
    ) -> None:
        """A workflow started over HTTP completes, and GET shows its output, Dapr-shaped."""
        api, _ = served
        started = await api.post("/v1.0/workflows/dapr/doubler/start?instanceID=h1", "8")
        await client.wait_for_workflow_completion("h1", timeout=20)
        got = await api.get("/v1.0/workflows/dapr/h1")
        assert (202, 200, "COMPLETED", "16") == (
            started.status,
            got.status,
            got.body["runtimeStatus"],
            got.body["properties"]["dapr.workflow.output"],
        )

    async def test_unknown_instance_is_404(self, served: tuple[Api, list[str]]) -> None:
        """The process answers an unknown id with 404 ERR_INSTANCE_ID_NOT_FOUND."""
        reply = await served[0].get("/v1.0-beta1/workflows/dapr/nope")
        assert (404, "ERR_INSTANCE_ID_NOT_FOUND") == (reply.status, reply.body["errorCode"])

    async def test_stops_cleanly_on_sigterm(self, nats_url: str, prefix: str) -> None:
        """SIGTERM stops serve-http with exit code 0 and a 'stopped' line."""
        async with serve_http_process(nats_url, prefix) as (api, ended):
            health = (await api.get("/v1.0/healthz")).status
        assert 204 == health
        assert ("0", True) == (ended[0], "jetloom serve-http: stopped" in ended[1])

    async def test_unreachable_nats_is_one_line(self) -> None:
        """Without a NATS server, serve-http fails fast with one error line."""
        url = f"nats://127.0.0.1:{free_port()}"
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "engine.cli",
            "serve-http",
            "--port",
            "0",
            "--nats-url",
            url,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        assert (1, 1) == (proc.returncode, len(err.decode().splitlines()))
        assert f"cannot connect to NATS at {url}" in err.decode()
