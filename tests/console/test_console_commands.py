"""``jetloom serve-http`` and ``jetloom dev`` serve the console, as real processes."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

import pytest
from aiohttp import ClientSession

from brokers import free_port
from tests.processes import ROOT, LineProcess, child_env

WORKFLOWS_FILE = str(ROOT / "tests" / "cli_workflows.py")


@pytest.fixture
async def http() -> AsyncIterator[ClientSession]:
    """An HTTP client."""
    async with ClientSession() as session:
        yield session


async def jetloom(*args: str, **env: str) -> LineProcess:
    """``python -m engine.cli ARGS`` with its stdout lines collected."""
    environment = {k: v for k, v in child_env(**env).items() if k != "NATS_URL"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "engine.cli", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        env=environment, cwd=ROOT,
    )
    return LineProcess(f"jetloom {args[0]}", proc)


class TestServeHttp:
    async def test_serves_the_console_at_the_root_behind_the_token(
        self, nats_url, prefix, http
    ):
        """serve-http says where the console is; with JETLOOM_API_TOKEN set, the page loads
        and the data needs the token (Dapr's header)."""
        port = free_port()
        server = await jetloom(
            "serve-http", "--port", str(port), "--nats-url", nats_url, "--prefix", prefix,
            JETLOOM_API_TOKEN="env-token",
        )
        try:
            line = await server.wait_for_line(lambda line: "listening on" in line, 30)
            base = f"http://127.0.0.1:{port}/"
            assert f"console at {base}; API token required" in line
            async with http.get(base) as page:
                assert (200, "text/html") == (page.status, page.content_type)
            async with http.get(f"{base}console/api/instances") as refused:
                assert 401 == refused.status
            async with http.get(
                f"{base}console/api/instances", headers={"dapr-api-token": "env-token"}
            ) as allowed:
                assert (200, 0) == (allowed.status, (await allowed.json())["total"])
        finally:
            await server.stop()
        assert 0 == server.proc.returncode


class TestDev:
    async def test_dev_serves_the_console_and_prints_its_url(self, nats_url, prefix, http):
        """dev starts the console beside the runtimes and prints its URL before 'ready'."""
        port = free_port()
        dev = await jetloom(
            "dev", WORKFLOWS_FILE, "--nats-url", nats_url, "--prefix", prefix,
            "--http-port", str(port),
        )
        try:
            await dev.wait_for_line(lambda line: line.startswith("jetloom dev: ready"), 30)
            url = f"http://127.0.0.1:{port}/"
            assert f"jetloom dev: console at {url}" in dev.lines
            async with http.get(f"{url}console/api/config") as config:
                assert prefix == (await config.json())["prefix"]
        finally:
            await dev.stop()
        assert 0 == dev.proc.returncode
