"""Dapr's workflow HTTP API on top of a WorkflowClient, served by ``jetloom serve-http``.

Same paths, bodies and status codes as a Dapr sidecar (``/v1.0/workflows/dapr/...`` and the
``v1.0-beta1`` / ``v1.0-alpha1`` prefixes), so a Dapr HTTP client only needs its base URL
pointed here; ``/v1.0/metadata`` and ``/v1.0/healthz`` answer as a sidecar does, for the SDKs
that wait for one. Request content is passed as-is: a body that is not JSON is a string.
Errors are Dapr's body ``{"errorCode": ..., "message": ...}``. The document is in
``engine/http/openapi.py``; docs/http.md has examples.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

import structlog
from aiohttp import web

from brokers import JetStreamBroker
from engine import (
    InstanceAlreadyRunningError,
    InstanceFinishedError,
    InstanceNotFoundError,
    InvalidInstanceIdError,
    WorkflowClient,
    WorkflowState,
    WorkflowStatus,
)
from engine.core.instance_ids import check_instance_id, has_instance_id_characters
from engine.http.jetloom_api import add_jetloom_routes
from engine.http.openapi import OPENAPI

_log = structlog.get_logger("jetloom.http")

COMPONENT = "dapr"
"""The only workflow component name served (Dapr's built-in engine has the same name)."""

DEFAULT_APP_ID = "jetloom"
"""The application id ``/v1.0/metadata`` names when none is set (``APP_ID``)."""

_VERSION = r"{version:v1\.0(?:-beta1|-alpha1)?}"
_PREFIX = f"/{_VERSION}/workflows/{{component}}"

_CLIENT_KEY = web.AppKey("client", WorkflowClient)


class DaprError(Exception):
    """A failure answered with Dapr's error body and an HTTP status."""

    def __init__(self, status: int, error_code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message


def dapr_status(status: WorkflowStatus) -> str:
    """The runtimeStatus a Dapr client sees for a jetloom status: the same name, as every
    jetloom status is one of Dapr's (``ORCHESTRATION_STATUS_<name>``, STALLED and
    CONTINUED_AS_NEW included)."""
    return status.value


def _custom_status(serialized: str | None) -> str:
    """A custom status as Dapr gives it: a string as the string, anything else as JSON."""
    if not serialized:
        return ""
    if serialized.startswith('"'):
        try:
            value = json.loads(serialized)
        except json.JSONDecodeError:
            return serialized
        if isinstance(value, str):
            return value
    return serialized


def _timestamp(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def dapr_state(state: WorkflowState) -> dict[str, Any]:
    """Dapr's GetWorkflow response for an instance (payloads as JSON text, like Dapr)."""
    properties = {
        "dapr.workflow.custom_status": _custom_status(state.serialized_custom_status),
        "jetloom.workflow.runtime_status": state.runtime_status.value,
    }
    if state.serialized_input is not None:
        properties["dapr.workflow.input"] = state.serialized_input
    failure = state.failure_details
    if failure is None:
        if state.serialized_output is not None:
            properties["dapr.workflow.output"] = state.serialized_output
    else:
        properties["dapr.workflow.failure.error_type"] = failure.type
        properties["dapr.workflow.failure.error_message"] = failure.message
        if failure.stack:
            properties["dapr.workflow.failure.stack_trace"] = failure.stack
    return {
        "instanceID": state.instance_id,
        "workflowName": state.name,
        "createdAt": _timestamp(state.created_at),
        "lastUpdatedAt": _timestamp(state.last_updated_at),
        "runtimeStatus": dapr_status(state.runtime_status),
        "properties": properties,
    }


# --------------------------------------------------------------------- requests


def _client(request: web.Request) -> WorkflowClient:
    return request.app[_CLIENT_KEY]


def _check_component(request: web.Request) -> None:
    component = request.match_info["component"]
    if component != COMPONENT:
        raise DaprError(
            400,
            "ERR_WORKFLOW_COMPONENT_NOT_FOUND",
            f"workflow component {component!r} does not exist; jetloom serves "
            f"'{COMPONENT}' (e.g. /v1.0/workflows/{COMPONENT}/...)",
        )


def _instance_id(text: str) -> str:
    """A valid instance id, or Dapr's 400 saying which rule it breaks (as Dapr, characters
    first: an id both too long and of forbidden characters is invalid)."""
    try:
        return check_instance_id(text)
    except InvalidInstanceIdError as exc:
        code = (
            "ERR_INSTANCE_ID_TOO_LONG"
            if has_instance_id_characters(text)
            else "ERR_INSTANCE_ID_INVALID"
        )
        raise DaprError(400, code, str(exc)) from None


async def _body(request: web.Request) -> Any:
    """The request content as the input or event data, passed as-is as Dapr does: a JSON
    body is its value, any other body the text itself (what an SDK sends for a string input,
    ``text/plain`` ``hi``), an empty one None."""
    raw = await request.read()
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return raw.decode("utf-8", errors="replace")


def _not_found(instance_id: str) -> DaprError:
    return DaprError(
        404,
        "ERR_INSTANCE_ID_NOT_FOUND",
        f"unable to find workflow with the provided instance ID: {instance_id}",
    )


async def _run(code: str, instance_id: str, action: Awaitable[object]) -> None:
    """Await a client call, turning its errors into Dapr's (``code`` for everything else)."""
    try:
        await action
    except InstanceNotFoundError:
        raise _not_found(instance_id) from None
    except (InstanceFinishedError, InstanceAlreadyRunningError) as exc:
        raise DaprError(500, code, str(exc)) from None


# --------------------------------------------------------------------- handlers


async def _start(request: web.Request) -> web.Response:
    _check_component(request)
    name = request.match_info["name"]
    given = request.query.get("instanceID") or None
    instance_id = None if given is None else _instance_id(given)
    workflow_input = await _body(request)
    try:
        instance_id = await _client(request).schedule_new_workflow(
            name, input=workflow_input, instance_id=instance_id
        )
    except InstanceAlreadyRunningError as exc:
        raise DaprError(500, "ERR_START_WORKFLOW", str(exc)) from None
    except ValueError as exc:  # a workflow name that cannot be a subject token
        raise DaprError(400, "ERR_START_WORKFLOW", str(exc)) from None
    return web.json_response({"instanceID": instance_id}, status=202)


async def _get(request: web.Request) -> web.Response:
    _check_component(request)
    instance_id = _instance_id(request.match_info["instance_id"])
    state = await _client(request).get_workflow_state(instance_id, fetch_payloads=True)
    if state is None:
        raise _not_found(instance_id)
    return web.json_response(dapr_state(state))


def _steer(
    code: str,
    action: Callable[[WorkflowClient, str, web.Request], Awaitable[object]],
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """A POST handler for one steering operation: 202 with no body, or Dapr's error."""

    async def handler(request: web.Request) -> web.Response:
        _check_component(request)
        instance_id = _instance_id(request.match_info["instance_id"])
        await _run(code, instance_id, action(_client(request), instance_id, request))
        return web.Response(status=202)

    handler.__doc__ = f"Steering operation answering Dapr's {code} on failure."
    return handler


async def _raise_event(client: WorkflowClient, instance_id: str, request: web.Request) -> None:
    data = await _body(request)
    await client.raise_workflow_event(instance_id, request.match_info["event"], data=data)


async def _terminate(client: WorkflowClient, instance_id: str, request: web.Request) -> None:
    await client.terminate_workflow(instance_id, recursive=True)


async def _pause(client: WorkflowClient, instance_id: str, request: web.Request) -> None:
    await client.pause_workflow(instance_id)


async def _resume(client: WorkflowClient, instance_id: str, request: web.Request) -> None:
    await client.resume_workflow(instance_id)


async def _purge(client: WorkflowClient, instance_id: str, request: web.Request) -> None:
    await client.purge_workflow(instance_id, recursive=True)


async def _healthz(request: web.Request) -> web.Response:
    """204 while connected to NATS, else Dapr's 500 ERR_HEALTH_NOT_READY."""
    if _client(request).is_connected:
        return web.Response(status=204)
    raise DaprError(500, "ERR_HEALTH_NOT_READY", "dapr is not ready: no connection to NATS")


async def _metadata(request: web.Request) -> web.Response:
    """The sidecar's metadata, as Dapr SDKs read it to find their sidecar: the application id
    (``APP_ID``) and the workflow component."""
    return web.json_response({
        "id": _client(request).app_id or DEFAULT_APP_ID,
        "runtimeVersion": _version(),
        "enabledFeatures": [],
        "actors": [],
        "components": [
            {"name": COMPONENT, "type": "workflow.dapr", "version": "v1", "capabilities": []}
        ],
        "extended": {},
        "subscriptions": [],
        "httpEndpoints": [],
    })


def _version() -> str:
    try:
        return f"jetloom-{metadata.version('jetloom')}"
    except metadata.PackageNotFoundError:
        return "jetloom"


async def _openapi(request: web.Request) -> web.Response:
    return web.json_response(OPENAPI)


_OPERATION_CODES = {
    "start": "ERR_START_WORKFLOW",
    "get": "ERR_GET_WORKFLOW",
    "terminate": "ERR_TERMINATE_WORKFLOW",
    "raiseEvent": "ERR_RAISE_EVENT_WORKFLOW",
    "pause": "ERR_PAUSE_WORKFLOW",
    "resume": "ERR_RESUME_WORKFLOW",
    "purge": "ERR_PURGE_WORKFLOW",
    "rerun": "ERR_RERUN_WORKFLOW",
}


def _operation_code(request: web.Request) -> str:
    route = request.match_info.route.name or "get"
    return _OPERATION_CODES.get(route, "ERR_GET_WORKFLOW")


@web.middleware
async def _dapr_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Answer every failure with Dapr's error body; unexpected ones as the operation's 500."""
    try:
        return await handler(request)
    except DaprError as exc:
        error = exc
    except web.HTTPException:
        raise
    except Exception as exc:
        _log.exception("http.request_failed", path=request.path, method=request.method)
        error = DaprError(
            500, _operation_code(request), f"{type(exc).__name__}: {exc}".rstrip(": ")
        )
    _log.info(
        "http.error",
        path=request.path,
        method=request.method,
        status=error.status,
        error_code=error.error_code,
    )
    return web.json_response(
        {"errorCode": error.error_code, "message": error.message}, status=error.status
    )


def build_app(client: WorkflowClient, broker: JetStreamBroker | None = None) -> web.Application:
    """The aiohttp application serving Dapr's workflow API through ``client``, and jetloom's
    own operations (``engine/http/jetloom_api.py``; the storage report needs ``broker``)."""
    app = web.Application(middlewares=[_dapr_errors])
    app[_CLIENT_KEY] = client
    add_jetloom_routes(app, client, broker)
    app.router.add_post(f"{_PREFIX}/{{name}}/start", _start, name="start")
    app.router.add_get(f"{_PREFIX}/{{instance_id}}", _get, name="get")
    app.router.add_post(
        f"{_PREFIX}/{{instance_id}}/terminate",
        _steer("ERR_TERMINATE_WORKFLOW", _terminate),
        name="terminate",
    )
    app.router.add_post(
        f"{_PREFIX}/{{instance_id}}/raiseEvent/{{event}}",
        _steer("ERR_RAISE_EVENT_WORKFLOW", _raise_event),
        name="raiseEvent",
    )
    app.router.add_post(
        f"{_PREFIX}/{{instance_id}}/pause", _steer("ERR_PAUSE_WORKFLOW", _pause), name="pause"
    )
    app.router.add_post(
        f"{_PREFIX}/{{instance_id}}/resume", _steer("ERR_RESUME_WORKFLOW", _resume), name="resume"
    )
    app.router.add_post(
        f"{_PREFIX}/{{instance_id}}/purge", _steer("ERR_PURGE_WORKFLOW", _purge), name="purge"
    )
    app.router.add_get(f"/{_VERSION}/healthz", _healthz)
    app.router.add_get(f"/{_VERSION}/healthz/outbound", _healthz)
    app.router.add_get(f"/{_VERSION}/metadata", _metadata)
    app.router.add_get("/openapi.json", _openapi)
    return app


async def serve_http(
    client: WorkflowClient,
    *,
    host: str,
    port: int,
    stop: asyncio.Event,
    ready: Callable[[str, int], None] | None = None,
) -> None:
    """Serve the API on ``host:port`` (0: a free port) until ``stop`` is set.

    ``ready(host, port)`` is called once the socket listens, with the bound port.
    """
    runner = web.AppRunner(build_app(client), access_log=None, handle_signals=False)
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
