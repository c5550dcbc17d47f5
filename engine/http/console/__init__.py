"""The web console: every workflow instance, its timeline and trace, and actions on it.

``add_console`` mounts it at ``/`` of the aiohttp application that serves Dapr's workflow API
(``jetloom serve-http``, ``jetloom dev``): the page and its files (``static/``, vendored
libraries included, so nothing is fetched from the internet), its JSON endpoints and event
stream under ``/console/api/``, and the API-token check for the whole application.
docs/console.md describes what it shows.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import structlog
from aiohttp import web

from brokers import JetStreamBroker, stop_tasks
from engine import WorkflowClient
from engine.http.console._access import SESSION_COOKIE, TOKEN_HEADER, TokenGuard
from engine.http.console._feed import InstanceFeed
from engine.http.console._routes import CONSOLE_KEY, Console, add_routes

__all__ = ["DEFAULT_JAEGER_URL", "SESSION_COOKIE", "TOKEN_HEADER", "add_console", "serve_app"]

DEFAULT_JAEGER_URL = "http://localhost:16686"
"""Where the trace links point unless told otherwise (Jaeger's UI on its usual port)."""

_log = structlog.get_logger("jetloom.console")


def add_console(
    app: web.Application,
    client: WorkflowClient,
    broker: JetStreamBroker,
    *,
    jaeger_url: str = DEFAULT_JAEGER_URL,
    api_token: str | None = None,
) -> None:
    """Serve the console at ``/`` of ``app`` (before the application starts).

    Args:
        app: the application, typically the one serving Dapr's workflow API; the console's
            actions call that API.
        client: reads instances and their histories.
        broker: on the client's prefix: follows the instances bucket (one reader for all
            browsers), reads consumers, dead letters and worker heartbeats.
        jaeger_url: base URL of the Jaeger UI that the trace links point to.
        api_token: when set, every request except the page itself, its files and health
            checks must carry it (``dapr-api-token`` header, bearer token or the console's
            session cookie), else it gets 401 and changes nothing. This guards the whole
            application, the Dapr API included.
    """
    guard = TokenGuard(api_token)
    feed = InstanceFeed(broker)
    app[CONSOLE_KEY] = Console(client, broker, feed, guard, jaeger_url)
    app.middlewares.insert(0, guard.middleware)  # outermost: nothing runs before the check
    add_routes(app)

    async def follow_instances(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(feed.run())
        yield
        await stop_tasks([task])

    async def end_event_streams(app: web.Application) -> None:
        feed.closing.set()  # open event streams end, so shutdown does not wait for them

    app.cleanup_ctx.append(follow_instances)
    app.on_shutdown.append(end_event_streams)


async def serve_app(
    app: web.Application,
    *,
    host: str,
    port: int,
    stop: asyncio.Event,
    ready: Callable[[str, int], None] | None = None,
) -> None:
    """Serve ``app`` on ``host:port`` (0: a free port) until ``stop`` is set.

    ``ready(host, port)`` is called once the socket listens, with the bound port.
    """
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0]
        _log.info("http.listening", host=host, port=bound[1])
        if ready is not None:
            ready(host, int(bound[1]))
        await stop.wait()
    finally:
        await runner.cleanup()
