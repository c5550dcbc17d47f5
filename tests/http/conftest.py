"""Fixtures for the HTTP API tests: a runtime, the API served in-process, OpenAPI checks."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer

from brokers import JetStreamBroker
from engine import WorkflowClient, WorkflowContext, WorkflowRuntime
from engine.http import build_app
from engine.http.console import add_console
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


API_TOKEN = "s3cret-token"
"""The token ``guarded_api`` requires."""


@pytest.fixture
async def api(client: WorkflowClient) -> AsyncIterator[Api]:
    """The HTTP API served in-process on a free port, over the test's client."""
    async with _serve(build_app(client)) as served:
        yield served


@pytest.fixture
async def guarded_api(client: WorkflowClient, broker: JetStreamBroker) -> AsyncIterator[Api]:
    """The HTTP API and the console as ``jetloom serve-http --api-token API_TOKEN`` serves
    them; the calls carry no token."""
    app = build_app(client)
    add_console(app, client, broker, api_token=API_TOKEN)
    async with _serve(app) as served:
        yield served


@contextlib.asynccontextmanager
async def _serve(app: web.Application) -> AsyncIterator[Api]:
    """``app`` served in-process on a free loopback port, and an ``Api`` calling it."""
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with ClientSession() as session:
            yield Api(session, str(server.make_url("")).rstrip("/"))
    finally:
        await server.close()
