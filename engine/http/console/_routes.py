"""The console's JSON endpoints and its event stream, under ``/console/api/``.

Steering (raise, pause, resume, terminate, purge) is not here: the page calls the Dapr API
served beside it, so the console and Dapr clients share one set of rules and error lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import structlog
from aiohttp import web

from brokers import JetStreamBroker
from engine import WorkflowClient, WorkflowState, WorkflowStatus
from engine.http.console._access import SESSION_COOKIE, TokenGuard, unauthorized
from engine.http.console._feed import InstanceFeed
from engine.http.console._health import health_report
from engine.http.console._index import PageQuery
from engine.http.console._timeline import (
    build_timeline,
    history_rows,
    related_instances,
    trace_id_of,
)

_log = structlog.get_logger("jetloom.console")

STATIC_DIR = Path(__file__).parent / "static"
EVENT_STREAM_KEEPALIVE = 15.0
"""Seconds after which an idle event stream sends a comment, so proxies keep it open."""
EVENT_STREAM_COALESCE = 0.5
"""Seconds an event stream waits after sending, so a burst of changes is one event."""


@dataclass(frozen=True)
class Console:
    """What the handlers need: the client and broker, the feed, the guard, the Jaeger URL."""

    client: WorkflowClient
    broker: JetStreamBroker
    feed: InstanceFeed
    guard: TokenGuard
    jaeger_url: str


CONSOLE_KEY = web.AppKey("console", Console)


def _console(request: web.Request) -> Console:
    return request.app[CONSOLE_KEY]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"message": message}, status=status)


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


# ------------------------------------------------------------------------- pages


async def index_page(request: web.Request) -> web.FileResponse:
    """The console's single page (views are chosen by the URL's fragment)."""
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


async def config(request: web.Request) -> web.Response:
    """What the page needs to know before anything else."""
    console = _console(request)
    return web.json_response({
        "prefix": console.broker.subjects.prefix,
        "jaeger_url": console.jaeger_url,
        "token_required": console.guard.required,
        "authenticated": console.guard.authenticated(request),
        "features": {"rerun": hasattr(console.client, "rerun_workflow_from_event")},
    })


async def login(request: web.Request) -> web.Response:
    """Check a typed-in token and give the browser the session cookie for it."""
    guard = _console(request).guard
    if not guard.required:
        return web.Response(status=204)
    try:
        token = str((await request.json()).get("token", ""))
    except (json.JSONDecodeError, AttributeError):
        return _error(400, 'send {"token": "..."} as JSON')
    if not guard.token_matches(token):
        _log.info("console.login_refused", remote=request.remote)
        return unauthorized()
    response = web.Response(status=204)
    guard.set_session(response, request)
    return response


async def logout(request: web.Request) -> web.Response:
    """Forget the session cookie."""
    response = web.Response(status=204)
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


# --------------------------------------------------------------------- instances


def _page_query(request: web.Request) -> PageQuery:
    query = request.query
    try:
        statuses = frozenset(
            WorkflowStatus(s.strip().upper())
            for value in query.getall("status", [])
            for s in value.split(",")
            if s.strip()
        )
        return PageQuery(
            statuses=statuses,
            workflow=query.get("workflow", ""),
            search=query.get("q", "").strip(),
            offset=int(query.get("offset", "0")),
            limit=int(query.get("limit", "50")),
            newest_first=query.get("order", "newest") != "oldest",
        )
    except ValueError as exc:
        names = ", ".join(s.value for s in WorkflowStatus)
        raise web.HTTPBadRequest(
            text=json.dumps({"message": f"bad list query ({exc}); status is one of {names}, "
                             "offset and limit are whole numbers"}),
            content_type="application/json",
        ) from None


def _list_state(feed: InstanceFeed) -> dict[str, Any]:
    """Counts and freshness, shared by the list and the event stream."""
    index = feed.index
    last_change = feed.last_change_at or index.latest_update
    return {
        "version": feed.version,
        "ready": feed.ready,
        "error": feed.error,
        "total": len(index),
        "counts": index.counts(),
        "workflows": index.workflow_names(),
        "last_change_at": None if last_change is None else _iso(last_change),
    }


async def list_instances(request: web.Request) -> web.Response:
    """One page of instances (filtered, newest first by default) with counts by status."""
    feed = _console(request).feed
    query = _page_query(request)
    page = feed.index.page(query)
    return web.json_response({
        **_list_state(feed),
        "matched": page.total,
        "offset": page.offset,
        "limit": page.limit,
        "items": [s.as_json() for s in page.items],
    })


def _payload(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _state_json(state: WorkflowState) -> dict[str, Any]:
    failure = state.failure_details
    return {
        "instance_id": state.instance_id,
        "name": state.name,
        "status": state.runtime_status.value,
        "created_at": _iso(state.created_at),
        "last_updated_at": _iso(state.last_updated_at),
        "input": _payload(state.serialized_input),
        "output": _payload(state.serialized_output),
        "custom_status": _payload(state.serialized_custom_status),
        "failure": None if failure is None else {
            "type": failure.type, "message": failure.message, "stack": failure.stack,
        },
    }


async def instance_detail(request: web.Request) -> web.Response:
    """An instance's state, history rows, timeline, trace link, parent and children."""
    console = _console(request)
    instance_id = request.match_info["instance_id"]
    try:
        state = await console.client.get_workflow_state(instance_id, fetch_payloads=True)
    except ValueError as exc:  # not a valid instance id
        return _error(400, str(exc))
    if state is None:
        return _error(404, f"no instance {instance_id!r}; it may have been purged")
    try:
        events = await console.client.get_history(instance_id)
    except LookupError:  # a start still on its way has a record but no history yet
        events = []
    wire: list[dict[str, Any]] = msgspec.json.decode(msgspec.json.encode(events))
    now = datetime.now(UTC)
    trace_id = trace_id_of(wire)
    related = related_instances(wire)

    def linked(instance: str, name: str = "") -> dict[str, Any]:
        known = console.feed.index.get(instance)
        return {
            "instance_id": instance,
            "name": known.name if known else name,
            "status": known.status.value if known else None,
        }

    return web.json_response({
        "now": _iso(now),
        "state": _state_json(state),
        "history": history_rows(wire),
        "timeline": build_timeline(wire, now).as_json(),
        "trace": None if trace_id is None else {
            "trace_id": trace_id,
            "url": f"{console.jaeger_url.rstrip('/')}/trace/{trace_id}",
        },
        "parent": None if related["parent"] is None else linked(related["parent"]),
        "children": [linked(c["instance_id"], c["name"]) for c in related["children"]],
    })


async def rerun_instance(request: web.Request) -> web.Response:
    """Rerun an instance from one of its history events, once the client can do it."""
    client = _console(request).client
    rerun: Callable[..., Awaitable[str]] | None = getattr(
        client, "rerun_workflow_from_event", None
    )
    if rerun is None:
        return _error(501, "rerunning from an event is not available in this version")
    try:
        body = await request.json()
        new_id = await rerun(
            request.match_info["instance_id"], int(body["event_id"]),
            new_instance_id=body.get("new_instance_id") or None,
        )
    except (KeyError, TypeError, ValueError, LookupError, RuntimeError) as exc:
        return _error(400, f"cannot rerun: {exc}")
    return web.json_response({"instance_id": new_id}, status=202)


# ------------------------------------------------------------------ live updates


async def instance_events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: a ``changes`` event (counts, freshness, version) whenever instances
    change, at most one per ``EVENT_STREAM_COALESCE`` seconds."""
    feed = _console(request).feed
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream",
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",
    })
    await response.prepare(request)
    seen = -1
    with contextlib.suppress(ConnectionResetError):  # the browser went away
        while not feed.closing.is_set():
            if await feed.wait_for_change(seen, EVENT_STREAM_KEEPALIVE):
                state = _list_state(feed)
                seen = state["version"]
                await response.write(f"event: changes\ndata: {json.dumps(state)}\n\n".encode())
                await asyncio.sleep(EVENT_STREAM_COALESCE)
            elif not feed.closing.is_set():
                await response.write(b": keep-alive\n\n")
    return response


# ------------------------------------------------------------------------ health


async def health(request: web.Request) -> web.Response:
    """Work consumers, dead letters and workers."""
    try:
        return web.json_response(await health_report(_console(request).broker))
    except Exception as exc:  # NATS away, streams not created yet: say so on the page
        _log.warning("console.health_failed", error=repr(exc))
        return _error(503, f"cannot read the health of the streams: {type(exc).__name__}: {exc}")


def add_routes(app: web.Application) -> None:
    """Register the page, its files and the console's endpoints."""
    app.router.add_get("/", index_page)
    app.router.add_static("/console/static/", STATIC_DIR)
    app.router.add_get("/console/api/config", config)
    app.router.add_post("/console/api/login", login)
    app.router.add_post("/console/api/logout", logout)
    app.router.add_get("/console/api/instances", list_instances)
    app.router.add_get("/console/api/instances/{instance_id}", instance_detail)
    app.router.add_post("/console/api/instances/{instance_id}/rerun", rerun_instance)
    app.router.add_get("/console/api/events", instance_events)
    app.router.add_get("/console/api/health", health)
