"""What jetloom serves beside Dapr's workflow API: rerunning from an event (at Dapr's place for
it, ``/v1.0/workflows/dapr/<id>/rerun``), recurring schedules and storage
(``/v1.0/workflows/jetloom/...``). Errors have Dapr's body, ``{"errorCode", "message"}``."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from brokers import JetStreamBroker, storage_stats
from engine import (
    InstanceAlreadyRunningError,
    InstanceNotFoundError,
    ScheduleAlreadyExistsError,
    ScheduleNotFoundError,
    WorkflowClient,
    WorkflowSchedule,
)
from engine.core.schedules import parse_interval

JETLOOM = "/{version:v1\\.0(?:-beta1|-alpha1)?}/workflows/jetloom"
"""Where jetloom's own operations are served."""

_CLIENT_KEY = web.AppKey("jetloom_client", WorkflowClient)
_BROKER_KEY = web.AppKey("jetloom_broker", JetStreamBroker)


class JetloomApiError(web.HTTPException):
    """A refusal answered with Dapr's error body."""

    def __init__(self, status: int, error_code: str, message: str) -> None:
        self.status_code = status
        super().__init__(
            text=web.json_response({"errorCode": error_code, "message": message}).text,
            content_type="application/json",
        )


def schedule_json(schedule: WorkflowSchedule) -> dict[str, Any]:
    """A schedule as the API gives it."""
    return {
        "scheduleID": schedule.schedule_id,
        "workflowName": schedule.workflow_name,
        "cron": schedule.cron,
        "timeZone": schedule.time_zone,
        "every": None if schedule.every is None else f"{int(schedule.every.total_seconds())}s",
        "input": schedule.serialized_input,
        "overlap": schedule.overlap,
        "paused": schedule.paused,
        "createdAt": schedule.created_at.isoformat(),
        "lastInstanceID": schedule.last_instance_id,
        "lastFiredAt": None if schedule.last_fired_at is None
        else schedule.last_fired_at.isoformat(),
    }


async def _object_body(request: web.Request, code: str) -> dict[str, Any]:
    try:
        body = await request.json() if (await request.read()).strip() else {}
    except ValueError as exc:
        raise JetloomApiError(400, "ERR_MALFORMED_REQUEST",
                              f"the request body is not valid JSON ({exc})") from None
    if not isinstance(body, dict):
        raise JetloomApiError(400, code, "the request body must be a JSON object")
    return body


# ------------------------------------------------------------------ rerun


async def _rerun(request: web.Request) -> web.Response:
    """Dapr's RerunWorkflowFromEvent: ``{"eventID", "newInstanceID", "input",
    "overwriteInput"}``; the event id is a history position (``jetloom history``'s ``#``)."""
    code = "ERR_RERUN_WORKFLOW"
    if request.match_info["component"] != "dapr":
        raise JetloomApiError(400, "ERR_WORKFLOW_COMPONENT_NOT_FOUND",
                              "jetloom serves the workflow component 'dapr'")
    source = request.match_info["instance_id"]
    body = await _object_body(request, code)
    event_id = body.get("eventID")
    if not isinstance(event_id, int) or isinstance(event_id, bool) or event_id < 0:
        raise JetloomApiError(400, code, "eventID must be a history position (0 or more)")
    try:
        new_id = await request.app[_CLIENT_KEY].rerun_workflow_from_event(
            source, event_id, new_instance_id=body.get("newInstanceID") or None,
            input=body.get("input"), overwrite_input=bool(body.get("overwriteInput")),
        )
    except InstanceNotFoundError:
        raise JetloomApiError(
            404, "ERR_INSTANCE_ID_NOT_FOUND",
            f"unable to find workflow with the provided instance ID: {source}",
        ) from None
    except InstanceAlreadyRunningError as exc:
        raise JetloomApiError(500, code, str(exc)) from None
    except ValueError as exc:  # no activity at that event, an invalid or the same id
        raise JetloomApiError(400, code, str(exc)) from None
    return web.json_response({"instanceID": new_id}, status=202)


# ------------------------------------------------------------------ schedules


async def _list_schedules(request: web.Request) -> web.Response:
    schedules = await request.app[_CLIENT_KEY].list_schedules()
    return web.json_response({"schedules": [schedule_json(s) for s in schedules]})


async def _get_schedule(request: web.Request) -> web.Response:
    schedule_id = request.match_info["schedule_id"]
    found = [s for s in await request.app[_CLIENT_KEY].list_schedules()
             if s.schedule_id == schedule_id]
    if not found:
        raise _no_schedule(schedule_id)
    return web.json_response(schedule_json(found[0]))


async def _create_schedule(request: web.Request) -> web.Response:
    code = "ERR_CREATE_SCHEDULE"
    schedule_id = request.match_info["schedule_id"]
    body = await _object_body(request, code)
    workflow = body.get("workflowName")
    if not isinstance(workflow, str):
        raise JetloomApiError(400, code, "workflowName (the workflow to start) is required")
    time_zone = body.get("timeZone")
    if time_zone is not None and not isinstance(time_zone, str):
        raise JetloomApiError(
            400, code, "timeZone must be an IANA time zone name such as 'Europe/Amsterdam'"
        )
    try:
        every = None if body.get("every") is None else parse_interval(str(body["every"]))
        await request.app[_CLIENT_KEY].create_schedule(
            schedule_id, workflow, cron=body.get("cron"), every=every, input=body.get("input"),
            overlap=str(body.get("overlap", "skip")), time_zone=time_zone,
        )
    except ScheduleAlreadyExistsError as exc:
        raise JetloomApiError(409, "ERR_SCHEDULE_EXISTS", str(exc)) from None
    except ValueError as exc:
        raise JetloomApiError(400, code, str(exc)) from None
    created = await _get_schedule(request)
    created.set_status(201)
    return created


def _no_schedule(schedule_id: str) -> JetloomApiError:
    return JetloomApiError(404, "ERR_SCHEDULE_NOT_FOUND", f"no schedule {schedule_id!r}")


def _change_schedule(verb: str) -> Any:
    async def handler(request: web.Request) -> web.Response:
        schedule_id = request.match_info["schedule_id"]
        client = request.app[_CLIENT_KEY]
        change = {
            "pause": client.pause_schedule,
            "resume": client.resume_schedule,
            "delete": client.delete_schedule,
        }[verb]
        try:
            await change(schedule_id)
        except ScheduleNotFoundError:
            raise _no_schedule(schedule_id) from None
        except ValueError as exc:
            raise JetloomApiError(400, "ERR_SCHEDULE_INVALID", str(exc)) from None
        return web.Response(status=204)

    handler.__doc__ = f"{verb.capitalize()} a schedule: 204, or 404 if there is none."
    return handler


# ------------------------------------------------------------------ storage


async def _storage(request: web.Request) -> web.Response:
    stats = await storage_stats(request.app[_BROKER_KEY])
    return web.json_response({
        "streams": [{"stream": s.name, "messages": s.messages, "bytes": s.bytes} for s in stats],
        "totalBytes": sum(s.bytes for s in stats),
    })


def add_jetloom_routes(
    app: web.Application, client: WorkflowClient, broker: JetStreamBroker | None
) -> None:
    """Serve rerun and schedules through ``client`` and, given a ``broker`` on the same
    prefix, the storage per stream. Added before Dapr's routes, which would take
    ``/v1.0/workflows/jetloom/schedules`` for an instance id."""
    app[_CLIENT_KEY] = client
    dapr = "/{version:v1\\.0(?:-beta1|-alpha1)?}/workflows/{component}"
    app.router.add_post(f"{dapr}/{{instance_id}}/rerun", _rerun, name="rerun")
    app.router.add_get(f"{JETLOOM}/schedules", _list_schedules)
    app.router.add_get(f"{JETLOOM}/schedules/{{schedule_id}}", _get_schedule)
    app.router.add_post(f"{JETLOOM}/schedules/{{schedule_id}}", _create_schedule)
    app.router.add_delete(f"{JETLOOM}/schedules/{{schedule_id}}", _change_schedule("delete"))
    app.router.add_post(f"{JETLOOM}/schedules/{{schedule_id}}/pause", _change_schedule("pause"))
    app.router.add_post(
        f"{JETLOOM}/schedules/{{schedule_id}}/resume", _change_schedule("resume")
    )
    if broker is not None:
        app[_BROKER_KEY] = broker
        app.router.add_get(f"{JETLOOM}/storage", _storage)
