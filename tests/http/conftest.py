"""Fixtures for the HTTP API tests: a runtime, the API served in-process, OpenAPI checks."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from engine import WorkflowClient, WorkflowContext, WorkflowRuntime
from engine.http import build_app
from tests.cli_workflows import build_runtime
from tests.http.http_support import Api


async def progress(ctx: WorkflowContext, steps: int) -> int:
    """Sets a custom status, then waits for 'go' and returns the steps."""
    ctx.set_custom_status({"step": 1, "of": steps})
    await ctx.wait_for_external_event("go")
    return steps


@pytest.fixture
async def runtime(nats_url: str, prefix: str) -> AsyncIterator[WorkflowRuntime]:
    """doubler, approval, failing (tests/cli_workflows.py) and progress, hosted in-process."""
    rt = build_runtime(nats_url, prefix)
    rt.register_workflow(progress)
    async with rt:
        yield rt


@pytest.fixture
async def api(client: WorkflowClient) -> AsyncIterator[Api]:
    """The HTTP API served in-process on a free port, over the test's client."""
    server = TestServer(build_app(client), host="127.0.0.1")
    await server.start_server()
    try:
        async with ClientSession() as session:
            yield Api(session, str(server.make_url("")).rstrip("/"))
    finally:
        await server.close()
