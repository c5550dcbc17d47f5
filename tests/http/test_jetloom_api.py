"""jetloom's own HTTP operations beside Dapr's: rerun from an event, recurring schedules and
storage, served in-process against a real nats-server (every response checked against the
OpenAPI document)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from brokers import JetStreamBroker, Subjects, connect_nats
from engine import TaskScheduled, WorkflowClient
from engine.http import build_app
from tests.http.http_support import Api

WF = "/v1.0/workflows/dapr"
JL = "/v1.0/workflows/jetloom"


@pytest.fixture
async def api_with_storage(client: WorkflowClient, nats_url: str, prefix: str
                           ) -> AsyncIterator[Api]:
    """The HTTP API with a broker on the test's prefix (what serve-http passes)."""
    nc = await connect_nats(nats_url)
    server = TestServer(build_app(client, JetStreamBroker(nc, Subjects(prefix))),
                        host="127.0.0.1")
    await server.start_server()
    try:
        async with ClientSession() as session:
            yield Api(session, str(server.make_url("")).rstrip("/"))
    finally:
        await server.close()
        await nc.close()


@pytest.mark.usefixtures("runtime")
class TestRerun:
    async def test_rerun_from_an_activity(self, api: Api, client: WorkflowClient) -> None:
        """POST .../<id>/rerun with Dapr's request fields starts the new instance (202), which
        runs the activity again with the new input."""
        await client.schedule_new_workflow("doubler", input=1, instance_id="h1")
        await client.wait_for_workflow_completion("h1", timeout=20)
        [event_id] = [i for i, e in enumerate(await client.get_history("h1"))
                      if isinstance(e, TaskScheduled)]

        reply = await api.post(f"{WF}/h1/rerun", json.dumps(
            {"eventID": event_id, "newInstanceID": "h1-b", "input": 8, "overwriteInput": True}
        ))
        state = await client.wait_for_workflow_completion("h1-b", timeout=20)

        assert (202, {"instanceID": "h1-b"}, "16") == (
            reply.status, reply.body, state.serialized_output
        )

    async def test_refusals(self, api: Api, client: WorkflowClient) -> None:
        """Not an activity: 400; unknown: 404; still running: 500 (Dapr's error body)."""
        await client.schedule_new_workflow("doubler", input=1, instance_id="h2")
        await client.wait_for_workflow_completion("h2", timeout=20)
        await client.schedule_new_workflow("approval", input="o", instance_id="h3")
        await client.wait_for_workflow_start("h3", timeout=20)

        not_activity = await api.post(f"{WF}/h2/rerun", '{"eventID": 0}')
        unknown = await api.post(f"{WF}/nobody/rerun", '{"eventID": 2}')
        running = await api.post(f"{WF}/h3/rerun", '{"eventID": 2}')

        assert [(400, "ERR_RERUN_WORKFLOW"), (404, "ERR_INSTANCE_ID_NOT_FOUND"),
                (500, "ERR_RERUN_WORKFLOW")] == [
            (r.status, r.body["errorCode"]) for r in (not_activity, unknown, running)
        ]


class TestSchedules:
    async def test_create_list_pause_resume_delete(self, api: Api) -> None:
        """A schedule's life over HTTP."""
        created = await api.post(f"{JL}/schedules/nightly", json.dumps(
            {"workflowName": "doubler", "cron": "0 2 * * *", "input": 3}
        ))
        listed = await api.get(f"{JL}/schedules")
        paused = await api.post(f"{JL}/schedules/nightly/pause")
        after_pause = await api.get(f"{JL}/schedules/nightly")
        resumed = await api.post(f"{JL}/schedules/nightly/resume")
        deleted = await api.call("DELETE", f"{JL}/schedules/nightly")
        gone = await api.get(f"{JL}/schedules/nightly")

        assert (201, "0 0 2 * * *", "3") == (
            created.status, created.body["cron"], created.body["input"]
        )
        assert ["nightly"] == [s["scheduleID"] for s in listed.body["schedules"]]
        assert (204, True, 204, 204) == (
            paused.status, after_pause.body["paused"], resumed.status, deleted.status
        )
        assert (404, "ERR_SCHEDULE_NOT_FOUND") == (gone.status, gone.body["errorCode"])

    async def test_refusals(self, api: Api) -> None:
        """A bad cron expression is 400, an existing id 409."""
        bad = await api.post(f"{JL}/schedules/s", '{"workflowName": "w", "cron": "x"}')
        await api.post(f"{JL}/schedules/s", '{"workflowName": "w", "every": "1h"}')
        again = await api.post(f"{JL}/schedules/s", '{"workflowName": "w", "every": "1h"}')
        assert [(400, "ERR_CREATE_SCHEDULE"), (409, "ERR_SCHEDULE_EXISTS")] == [
            (r.status, r.body["errorCode"]) for r in (bad, again)
        ]

    async def test_a_cron_in_a_time_zone(self, api: Api) -> None:
        """timeZone reads the cron in that zone and comes back with the schedule; an unknown
        zone, or one with an interval, is 400."""
        created = await api.post(f"{JL}/schedules/tz", json.dumps(
            {"workflowName": "doubler", "cron": "30 2 * * *", "timeZone": "Europe/Amsterdam"}
        ))
        utc = await api.post(f"{JL}/schedules/utc", '{"workflowName": "w", "cron": "0 2 * * *"}')
        unknown = await api.post(f"{JL}/schedules/s", json.dumps(
            {"workflowName": "w", "cron": "0 2 * * *", "timeZone": "Mars/Olympus"}
        ))
        interval = await api.post(f"{JL}/schedules/s", json.dumps(
            {"workflowName": "w", "every": "1h", "timeZone": "Europe/Amsterdam"}
        ))

        assert (201, "0 30 2 * * *", "Europe/Amsterdam", None) == (
            created.status, created.body["cron"], created.body["timeZone"],
            utc.body["timeZone"],
        )
        assert (400, 400) == (unknown.status, interval.status)
        assert "unknown time zone 'Mars/Olympus'" in unknown.body["message"]
        assert "only cron schedules take a time zone" in interval.body["message"]


class TestStorage:
    async def test_storage_per_stream(self, api_with_storage: Api, prefix: str) -> None:
        """GET .../jetloom/storage gives messages and bytes per stream, and the total."""
        reply = await api_with_storage.get(f"{JL}/storage")
        streams = {s["stream"] for s in reply.body["streams"]}
        assert 200 == reply.status
        assert {f"{prefix.upper()}_HISTORY", f"KV_{prefix}_instances"} <= streams
