"""The OpenAPI 3.1 document of ``jetloom serve-http`` (Dapr's workflow HTTP API), served as JSON.

The paths, bodies and status codes are Dapr's (docs.dapr.io/reference/api/workflow_api), so the
document also describes what a Dapr client expects; jetloom's own operations (rerun, schedules,
storage) are marked so. Tests validate every response against it.

With an API token set (``--api-token`` / ``JETLOOM_API_TOKEN``) every operation but the public
ones (health checks, this document), which say ``security: []``, answers 401 without it: the
security schemes list the ways to pass it, and each guarded operation lists the 401.
"""

from __future__ import annotations

from typing import Any

from engine import WorkflowStatus
from engine.core.instance_ids import INSTANCE_ID_PATTERN
from engine.http.console import SESSION_COOKIE, TOKEN_HEADER

API_VERSIONS = ("v1.0", "v1.0-beta1", "v1.0-alpha1")
"""Dapr's workflow API prefixes; all serve the same operations."""

DAPR_STATUSES = tuple(status.value for status in WorkflowStatus)
"""The runtimeStatus strings served: every jetloom status, each named as Dapr names it (Dapr's
``ORCHESTRATION_STATUS_<name>``; Dapr also has CANCELED, which jetloom never reports)."""

_PREFIX = "/{apiVersion}/workflows/{workflowComponent}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


_PATH_PARAMS = [
    {
        "name": "apiVersion",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "enum": list(API_VERSIONS)},
        "description": "Dapr's API version prefix; every version serves the same API.",
    },
    {
        "name": "workflowComponent",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "example": "dapr"},
        "description": "Workflow component; jetloom serves `dapr` only.",
    },
]

_INSTANCE_PARAM = {
    "name": "instanceId",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": INSTANCE_ID_PATTERN},
    "description": "The workflow instance id.",
}

_ANY_JSON: dict[str, Any] = {"description": "Any JSON value."}


def _content(what: str) -> dict[str, Any]:
    """A request body passed as-is, as Dapr does: JSON is its value, anything else a string."""
    return {
        "required": False,
        "description": (
            f"{what}: a JSON body is its value; any other body (e.g. text/plain `hi`) is the "
            "string itself; an empty body means null."
        ),
        "content": {
            "application/json": {"schema": _ANY_JSON},
            "text/plain": {"schema": {"type": "string"}},
        },
    }


_PUBLIC: list[dict[str, list[str]]] = []
"""The ``security`` of an operation that needs no token even when the server has one."""

_UNAUTHORIZED: dict[str, Any] = {
    **_error(
        "The server requires an API token and the request carries none, or a wrong one "
        "(ERR_UNAUTHORIZED); nothing was changed."
    ),
    "headers": {
        "WWW-Authenticate": {
            "description": 'Bearer realm="jetloom"',
            "schema": {"type": "string"},
        }
    },
}

_COMMON_ERRORS = {
    "400": _error(
        "Malformed request: unknown component (ERR_WORKFLOW_COMPONENT_NOT_FOUND) or invalid "
        "instance id (ERR_INSTANCE_ID_INVALID, ERR_INSTANCE_ID_TOO_LONG)."
    ),
    "404": _error("No instance with that id (ERR_INSTANCE_ID_NOT_FOUND)."),
}


def _steer(summary: str, code: str, *, body: bool = False) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "parameters": [_INSTANCE_PARAM],
        "responses": {
            "202": {"description": "Accepted; no content."},
            **_COMMON_ERRORS,
            "500": _error(f"The instance refused it or NATS failed ({code})."),
        },
    }
    if body:
        operation["requestBody"] = _content("The event data")
    return {"parameters": _PATH_PARAMS, "post": operation}


_JETLOOM = "/{apiVersion}/workflows/jetloom"

_SCHEDULE_PARAM = {
    "name": "scheduleId",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,40}$"},
    "description": "The schedule id.",
}

_NO_SCHEDULE = _error("No schedule with that id (ERR_SCHEDULE_NOT_FOUND).")


def _schedule_change(summary: str) -> dict[str, Any]:
    return {
        "summary": summary,
        "parameters": [_SCHEDULE_PARAM],
        "responses": {"204": {"description": "Done; no content."}, "404": _NO_SCHEDULE},
    }


OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "jetloom workflow HTTP API (Dapr-compatible)",
        "version": "1.0",
        "description": (
            "Dapr's workflow HTTP API served by `jetloom serve-http` on top of NATS JetStream. "
            "Errors carry Dapr's body: {errorCode, message}. A server started with an API "
            "token (--api-token or JETLOOM_API_TOKEN) answers every operation but the health "
            "checks and this document with 401 ERR_UNAUTHORIZED unless the request carries "
            f"the token, in Dapr's `{TOKEN_HEADER}` header or as `Authorization: Bearer "
            "TOKEN`; without a token set, no credentials are needed."
        ),
    },
    # Either scheme, or none when the server runs without a token.
    "security": [{"daprApiToken": []}, {"bearerToken": []}, {}],
    "paths": {
        f"{_PREFIX}/{{workflowName}}/start": {
            "parameters": _PATH_PARAMS,
            "post": {
                "summary": "Start a workflow instance.",
                "parameters": [
                    {
                        "name": "workflowName",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,128}$"},
                    },
                    {
                        "name": "instanceID",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string"},
                        "description": "Instance id; generated when absent or empty.",
                    },
                ],
                "requestBody": _content("The workflow input"),
                "responses": {
                    "202": _json(_ref("StartResponse"), "Started."),
                    "400": _error(
                        "Bad instance id or workflow name (ERR_INSTANCE_ID_INVALID, "
                        "ERR_INSTANCE_ID_TOO_LONG, ERR_START_WORKFLOW)."
                    ),
                    "500": _error(
                        "The id's instance is still running, or NATS failed (ERR_START_WORKFLOW)."
                    ),
                },
            },
        },
        f"{_PREFIX}/{{instanceId}}": {
            "parameters": _PATH_PARAMS,
            "get": {
                "summary": "Get an instance's status, input, output and custom status.",
                "parameters": [_INSTANCE_PARAM],
                "responses": {
                    "200": _json(_ref("WorkflowState"), "The instance."),
                    **_COMMON_ERRORS,
                    "500": _error("NATS failed (ERR_GET_WORKFLOW)."),
                },
            },
        },
        f"{_PREFIX}/{{instanceId}}/terminate": _steer(
            "Terminate an instance and its child workflows.", "ERR_TERMINATE_WORKFLOW"
        ),
        f"{_PREFIX}/{{instanceId}}/raiseEvent/{{eventName}}": {
            **_steer("Raise an external event.", "ERR_RAISE_EVENT_WORKFLOW", body=True),
            "parameters": [
                *_PATH_PARAMS,
                {"name": "eventName", "in": "path", "required": True, "schema": {"type": "string"}},
            ],
        },
        f"{_PREFIX}/{{instanceId}}/pause": _steer(
            "Suspend an instance; answers once it is SUSPENDED (up to 60 s).",
            "ERR_PAUSE_WORKFLOW",
        ),
        f"{_PREFIX}/{{instanceId}}/resume": _steer(
            "Resume a suspended instance; answers once it is no longer SUSPENDED (up to 60 s).",
            "ERR_RESUME_WORKFLOW",
        ),
        f"{_PREFIX}/{{instanceId}}/purge": _steer(
            "Delete a finished instance's history and state (and its children's).",
            "ERR_PURGE_WORKFLOW",
        ),
        f"{_PREFIX}/{{instanceId}}/rerun": {
            "parameters": _PATH_PARAMS,
            "post": {
                "summary": (
                    "Rerun a finished instance from one of its activities, as a new instance "
                    "(Dapr's RerunWorkflowFromEvent; jetloom's event ids are history positions, "
                    "the # column of `jetloom history`)."
                ),
                "parameters": [_INSTANCE_PARAM],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("RerunRequest")}},
                },
                "responses": {
                    "202": _json(_ref("StartResponse"), "The new instance was started."),
                    "400": _error(
                        "The event is not an activity's task_scheduled, the new id is invalid or "
                        "the source's, or the body is wrong (ERR_RERUN_WORKFLOW, "
                        "ERR_MALFORMED_REQUEST)."
                    ),
                    "404": _error("No instance with that id (ERR_INSTANCE_ID_NOT_FOUND)."),
                    "500": _error(
                        "The source has not finished, the new id's instance is running, or NATS "
                        "failed (ERR_RERUN_WORKFLOW)."
                    ),
                },
            },
        },
        f"{_JETLOOM}/schedules": {
            "parameters": [_PATH_PARAMS[0]],
            "get": {
                "summary": "List recurring schedules (jetloom).",
                "responses": {"200": _json(_ref("ScheduleList"), "Every schedule, by id.")},
            },
        },
        f"{_JETLOOM}/schedules/{{scheduleId}}": {
            "parameters": [_PATH_PARAMS[0]],
            "get": {
                "summary": "One recurring schedule (jetloom).",
                "parameters": [_SCHEDULE_PARAM],
                "responses": {"200": _json(_ref("Schedule"), "The schedule."), "404": _NO_SCHEDULE},
            },
            "post": {
                "summary": (
                    "Create a recurring schedule, fired by nats-server itself: each tick starts "
                    "one instance named <scheduleId>-<tick> (jetloom)."
                ),
                "parameters": [_SCHEDULE_PARAM],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("CreateSchedule")}},
                },
                "responses": {
                    "201": _json(_ref("Schedule"), "Created."),
                    "400": _error(
                        "Invalid id, cron expression, interval, overlap or body "
                        "(ERR_CREATE_SCHEDULE, ERR_MALFORMED_REQUEST)."
                    ),
                    "409": _error("A schedule with that id exists (ERR_SCHEDULE_EXISTS)."),
                },
            },
            "delete": _schedule_change("Delete a schedule; its instances stay (jetloom)."),
        },
        f"{_JETLOOM}/schedules/{{scheduleId}}/pause": {
            "parameters": [_PATH_PARAMS[0]],
            "post": _schedule_change("Stop a schedule's firings until resumed (jetloom)."),
        },
        f"{_JETLOOM}/schedules/{{scheduleId}}/resume": {
            "parameters": [_PATH_PARAMS[0]],
            "post": _schedule_change("Let a paused schedule fire again (jetloom)."),
        },
        f"{_JETLOOM}/storage": {
            "parameters": [_PATH_PARAMS[0]],
            "get": {
                "summary": "The messages and bytes each stream of the prefix stores (jetloom).",
                "responses": {"200": _json(_ref("Storage"), "Storage per stream.")},
            },
        },
        "/{apiVersion}/healthz": {
            "parameters": [_PATH_PARAMS[0]],
            "get": {
                "summary": "Health, as a Dapr sidecar answers it.",
                "security": _PUBLIC,
                "responses": {
                    "204": {"description": "Healthy: connected to NATS."},
                    "500": _error("Not connected to NATS (ERR_HEALTH_NOT_READY)."),
                },
            },
        },
        "/{apiVersion}/healthz/outbound": {
            "parameters": [_PATH_PARAMS[0]],
            "get": {
                "summary": "Readiness of outbound calls (what Dapr SDKs wait for).",
                "security": _PUBLIC,
                "responses": {
                    "204": {"description": "Healthy: connected to NATS."},
                    "500": _error("Not connected to NATS (ERR_HEALTH_NOT_READY)."),
                },
            },
        },
        "/{apiVersion}/metadata": {
            "parameters": [_PATH_PARAMS[0]],
            "get": {
                "summary": (
                    "The sidecar's metadata (Dapr SDKs read it to find their sidecar): the "
                    "application id and the workflow component."
                ),
                "responses": {"200": _json(_ref("Metadata"), "The metadata.")},
            },
        },
        "/openapi.json": {
            "get": {
                "summary": "This document.",
                "security": _PUBLIC,
                "responses": {"200": _json({"type": "object"}, "The OpenAPI document.")},
            }
        },
    },
    "components": {
        "securitySchemes": {
            "daprApiToken": {
                "type": "apiKey",
                "in": "header",
                "name": TOKEN_HEADER,
                "description": (
                    "The API token in Dapr's header, as Dapr SDKs send it when DAPR_API_TOKEN "
                    "is set."
                ),
            },
            "bearerToken": {
                "type": "http",
                "scheme": "bearer",
                "description": (
                    "The API token as `Authorization: Bearer TOKEN`. (The web console uses "
                    f"its `{SESSION_COOKIE}` session cookie instead, set by its login.)"
                ),
            },
        },
        "schemas": {
            "StartResponse": {
                "type": "object",
                "required": ["instanceID"],
                "additionalProperties": False,
                "properties": {"instanceID": {"type": "string"}},
            },
            "WorkflowState": {
                "type": "object",
                "required": [
                    "instanceID",
                    "workflowName",
                    "createdAt",
                    "lastUpdatedAt",
                    "runtimeStatus",
                    "properties",
                ],
                "additionalProperties": False,
                "properties": {
                    "instanceID": {"type": "string"},
                    "workflowName": {"type": "string"},
                    "createdAt": {"type": "string", "format": "date-time"},
                    "lastUpdatedAt": {"type": "string", "format": "date-time"},
                    "runtimeStatus": {"type": "string", "enum": list(DAPR_STATUSES)},
                    "properties": {
                        "type": "object",
                        "description": (
                            "String values: dapr.workflow.input / output (JSON text), "
                            "dapr.workflow.custom_status (a string as itself, anything else "
                            "as JSON text), dapr.workflow.failure.error_type / error_message / "
                            "stack_trace, and jetloom.workflow.runtime_status (jetloom's own "
                            "status, the same as runtimeStatus)."
                        ),
                        "additionalProperties": {"type": "string"},
                    },
                },
            },
            "Metadata": {
                "type": "object",
                "required": ["id", "runtimeVersion", "components"],
                "properties": {
                    "id": {
                        "type": "string",
                        "description": "The application id (APP_ID), else `jetloom`.",
                    },
                    "runtimeVersion": {"type": "string"},
                    "enabledFeatures": {"type": "array", "items": {"type": "string"}},
                    "actors": {"type": "array"},
                    "components": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["name", "type", "version"],
                            "properties": {
                                "name": {"type": "string"},
                                "type": {"type": "string"},
                                "version": {"type": "string"},
                                "capabilities": {"type": "array", "items": {"type": "string"}},
                            },
                        },
                    },
                    "extended": {"type": "object", "additionalProperties": {"type": "string"}},
                    "subscriptions": {"type": "array"},
                    "httpEndpoints": {"type": "array"},
                },
            },
            "RerunRequest": {
                "type": "object",
                "required": ["eventID"],
                "properties": {
                    "eventID": {
                        "type": "integer",
                        "minimum": 0,
                        "description": "History position of an activity's task_scheduled.",
                    },
                    "newInstanceID": {"type": "string", "pattern": INSTANCE_ID_PATTERN},
                    "input": {**_ANY_JSON, "description": "The activity's new input."},
                    "overwriteInput": {
                        "type": "boolean",
                        "description": "Run the activity with `input` (else its recorded one).",
                    },
                },
            },
            "CreateSchedule": {
                "type": "object",
                "required": ["workflowName"],
                "properties": {
                    "workflowName": {"type": "string"},
                    "cron": {
                        "type": "string",
                        "description": "5 fields, 6 with seconds first, or @daily etc. (in "
                        "timeZone, else UTC).",
                    },
                    "timeZone": {
                        "type": "string",
                        "description": "IANA time zone of the cron times, e.g. Europe/Amsterdam "
                        "(cron only; default UTC).",
                    },
                    "every": {"type": "string", "description": "Interval, e.g. 30s, 5m, 1h30m."},
                    "input": _ANY_JSON,
                    "overlap": {"type": "string", "enum": ["skip", "allow"]},
                },
            },
            "Schedule": {
                "type": "object",
                "required": ["scheduleID", "workflowName", "overlap", "paused", "createdAt"],
                "additionalProperties": False,
                "properties": {
                    "scheduleID": {"type": "string"},
                    "workflowName": {"type": "string"},
                    "cron": {"type": ["string", "null"]},
                    "timeZone": {
                        "type": ["string", "null"],
                        "description": "IANA time zone of the cron times (null: UTC).",
                    },
                    "every": {"type": ["string", "null"]},
                    "input": {
                        "type": ["string", "null"],
                        "description": "The input each instance gets, as JSON text.",
                    },
                    "overlap": {"type": "string", "enum": ["skip", "allow"]},
                    "paused": {"type": "boolean"},
                    "createdAt": {"type": "string", "format": "date-time"},
                    "lastInstanceID": {"type": ["string", "null"]},
                    "lastFiredAt": {"type": ["string", "null"], "format": "date-time"},
                },
            },
            "ScheduleList": {
                "type": "object",
                "required": ["schedules"],
                "properties": {"schedules": {"type": "array", "items": _ref("Schedule")}},
            },
            "Storage": {
                "type": "object",
                "required": ["streams", "totalBytes"],
                "properties": {
                    "streams": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["stream", "messages", "bytes"],
                            "properties": {
                                "stream": {"type": "string"},
                                "messages": {"type": "integer"},
                                "bytes": {"type": "integer"},
                            },
                        },
                    },
                    "totalBytes": {"type": "integer"},
                },
            },
            "Error": {
                "type": "object",
                "required": ["errorCode", "message"],
                "properties": {
                    "errorCode": {"type": "string", "pattern": "^ERR_[A-Z_]+$"},
                    "message": {"type": "string"},
                },
            },
        }
    },
}


_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def _list_unauthorized(document: dict[str, Any]) -> None:
    """Add the 401 to every operation of ``document`` that is not public."""
    for item in document["paths"].values():
        for method in _METHODS:
            operation = item.get(method)
            if operation is not None and operation.get("security") != _PUBLIC:
                operation["responses"]["401"] = _UNAUTHORIZED


_list_unauthorized(OPENAPI)
