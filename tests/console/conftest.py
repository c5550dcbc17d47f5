"""Fixtures for the console tests: the console served in-process on the test's namespace (as
``jetloom serve-http`` serves it, beside Dapr's API), and Chromium driven by Playwright."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, Page, async_playwright, expect

from brokers import JetStreamBroker, Subjects, connect_nats
from engine import WorkflowClient, WorkflowRuntime
from engine.http import build_app
from engine.http.console import add_console
from tests.cli_workflows import build_runtime
from tests.console.browser import CHROMIUM_ARGS, chromium_path

API_TOKEN = "console-test-token"
JAEGER_URL = "http://jaeger.test:16686"

expect.set_options(timeout=30_000)  # sagas run in real processes; no test waits this long


@contextlib.asynccontextmanager
async def serve_console(
    nats_url: str, prefix: str, client: WorkflowClient, api_token: str | None = None
) -> AsyncIterator[str]:
    """The Dapr API and the console on a free loopback port; its base URL (ending in /)."""
    nc = await connect_nats(nats_url)
    app = build_app(client)
    add_console(
        app, client, JetStreamBroker(nc, Subjects(prefix)),
        jaeger_url=JAEGER_URL, api_token=api_token,
    )
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("/"))
    finally:
        await server.close()
        await nc.close()


@pytest.fixture
async def console(nats_url: str, prefix: str, client: WorkflowClient) -> AsyncIterator[str]:
    """The console without a token; its base URL."""
    async with serve_console(nats_url, prefix, client) as url:
        yield url


@pytest.fixture
async def guarded_console(
    nats_url: str, prefix: str, client: WorkflowClient
) -> AsyncIterator[str]:
    """The console (and the Dapr API) requiring ``API_TOKEN``; its base URL."""
    async with serve_console(nats_url, prefix, client, api_token=API_TOKEN) as url:
        yield url


@pytest.fixture
async def runtime(nats_url: str, prefix: str) -> AsyncIterator[WorkflowRuntime]:
    """doubler, approval and failing (tests/cli_workflows.py), hosted in-process."""
    async with build_runtime(nats_url, prefix) as rt:
        yield rt


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless, for the whole session."""
    path = chromium_path()
    if path is None:
        message = "no Chromium here: apt-get install chromium (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A fresh browser context (no cookies) and page per test; page errors fail the test."""
    context = await browser.new_context(viewport={"width": 1400, "height": 900})
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    await context.close()
    assert [] == errors
