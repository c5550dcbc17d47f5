"""Dapr's workflow HTTP API (engine/http/dapr_api.py), served in-process against a real
nats-server."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from openapi_spec_validator import validate

from engine import WorkflowClient, WorkflowStatus
from engine.http import OPENAPI, dapr_status
from tests.http.http_support import Api

WF = "/v1.0/workflows/dapr"


async def wait_for_status(
    client: WorkflowClient, instance_id: str, status: WorkflowStatus
) -> None:
    """Watch (not poll) the instance's record until it has ``status``."""
    await client.wait_for_workflow_status(instance_id, {status}, timeout=20)


async def start(api: Api, workflow: str, instance_id: str, body: str = "") -> None:
    reply = await api.post(f"{WF}/{workflow}/start?instanceID={instance_id}", body)
    assert (202, {"instanceID": instance_id}) == (reply.status, reply.body)


@pytest.mark.usefixtures("runtime")
class TestStart:
    async def test_start_returns_the_instance_id_and_runs(
        self, api: Api, client: WorkflowClient
    ) -> None:
        """POST start answers 202 with the instance id, and the workflow runs on its input."""
        await start(api, "doubler", "s1", "21")
        state = await client.wait_for_workflow_completion("s1", timeout=20)
        assert (WorkflowStatus.COMPLETED, "42") == (state.runtime_status, state.serialized_output)

    async def test_generated_id(self, api: Api, client: WorkflowClient) -> None:
        """Without instanceID the answer carries a generated id naming the new instance."""
        reply = await api.post(f"{WF}/doubler/start", "2")
        state = await client.wait_for_workflow_completion(reply.body["instanceID"], timeout=20)
        assert (202, "4") == (reply.status, state.serialized_output)

    async def test_beta1_prefix(self, api: Api, client: WorkflowClient) -> None:
        """The v1.0-beta1 prefix serves the same API."""
        reply = await api.post("/v1.0-beta1/workflows/dapr/doubler/start?instanceID=b1", "1")
        state = await client.wait_for_workflow_completion("b1", timeout=20)
        assert (202, WorkflowStatus.COMPLETED) == (reply.status, state.runtime_status)

    async def test_body_that_is_not_json_is_a_string(
        self, api: Api, client: WorkflowClient
    ) -> None:
        """A body that is not JSON is passed as-is, as Dapr does: the input is that text."""
        reply = await api.post(f"{WF}/approval/start?instanceID=text", "{oops")
        state = await client.get_workflow_state("text")
        assert (202, '"{oops"') == (reply.status, state and state.serialized_input)

    async def test_running_id_is_refused(self, api: Api) -> None:
        """Starting an id whose instance still runs is Dapr's ERR_START_WORKFLOW (500)."""
        await start(api, "approval", "busy", '"o"')
        reply = await api.post(f"{WF}/approval/start?instanceID=busy", '"o"')
        assert (500, "ERR_START_WORKFLOW") == (reply.status, reply.body["errorCode"])
        assert "still running" in reply.body["message"]

    async def test_invalid_instance_id(self, api: Api) -> None:
        """An id with forbidden characters is 400 ERR_INSTANCE_ID_INVALID."""
        reply = await api.post(f"{WF}/doubler/start?instanceID=a.b", "1")
        assert (400, "ERR_INSTANCE_ID_INVALID") == (reply.status, reply.body["errorCode"])

    async def test_too_long_instance_id(self, api: Api) -> None:
        """An id over 64 characters is 400 ERR_INSTANCE_ID_TOO_LONG."""
        reply = await api.post(f"{WF}/doubler/start?instanceID={'x' * 65}", "1")
        assert (400, "ERR_INSTANCE_ID_TOO_LONG") == (reply.status, reply.body["errorCode"])

    async def test_invalid_workflow_name(self, api: Api) -> None:
        """A workflow name that cannot be a subject token is 400 ERR_START_WORKFLOW."""
        reply = await api.post(f"{WF}/a.b/start", "1")
        assert (400, "ERR_START_WORKFLOW") == (reply.status, reply.body["errorCode"])

    async def test_unknown_component(self, api: Api) -> None:
        """A component other than 'dapr' is 400 ERR_WORKFLOW_COMPONENT_NOT_FOUND."""
        reply = await api.post("/v1.0/workflows/temporal/doubler/start", "1")
        assert (400, "ERR_WORKFLOW_COMPONENT_NOT_FOUND") == (
            reply.status,
            reply.body["errorCode"],
        )


@pytest.mark.usefixtures("runtime")
class TestGet:
    async def test_completed_instance_in_dapr_shape(self, api: Api, client: WorkflowClient) -> None:
        """GET shows a completed instance with Dapr's fields and its input and output as text."""
        await start(api, "doubler", "g1", "5")
        await client.wait_for_workflow_completion("g1", timeout=20)
        reply = await api.get(f"{WF}/g1")
        body = reply.body
        assert (200, "g1", "doubler", "COMPLETED") == (
            reply.status,
            body["instanceID"],
            body["workflowName"],
            body["runtimeStatus"],
        )
        assert {"input": "5", "output": "10", "custom_status": ""} == {
            key: body["properties"][f"dapr.workflow.{key}"]
            for key in ("input", "output", "custom_status")
        }

    async def test_failed_instance_has_failure_properties(
        self, api: Api, client: WorkflowClient
    ) -> None:
        """A failed instance is FAILED with Dapr's failure properties and no output."""
        await start(api, "failing", "g2")
        await client.wait_for_workflow_completion("g2", timeout=20)
        properties = (await api.get(f"{WF}/g2")).body["properties"]
        assert ("ValueError", "boom", False) == (
            properties["dapr.workflow.failure.error_type"],
            properties["dapr.workflow.failure.error_message"],
            "dapr.workflow.output" in properties,
        )

    async def test_custom_status(self, api: Api, client: WorkflowClient) -> None:
        """The custom status appears as JSON text in dapr.workflow.custom_status."""
        await start(api, "progress", "g3", "3")
        await wait_for_status(client, "g3", WorkflowStatus.RUNNING)
        body = (await api.get(f"{WF}/g3")).body
        assert ("RUNNING", {"step": 1, "of": 3}) == (
            body["runtimeStatus"],
            json.loads(body["properties"]["dapr.workflow.custom_status"]),
        )

    async def test_unknown_instance_is_404(self, api: Api) -> None:
        """GET of an unknown id is 404 ERR_INSTANCE_ID_NOT_FOUND."""
        reply = await api.get(f"{WF}/nope")
        assert (404, "ERR_INSTANCE_ID_NOT_FOUND") == (reply.status, reply.body["errorCode"])

    async def test_invalid_id_is_400(self, api: Api) -> None:
        """GET of an id with forbidden characters is 400 ERR_INSTANCE_ID_INVALID."""
        reply = await api.get(f"{WF}/a%20b")
        assert (400, "ERR_INSTANCE_ID_INVALID") == (reply.status, reply.body["errorCode"])


class TestStatusMapping:
    def test_statuses_are_named_as_dapr_names_them(self) -> None:
        """Every jetloom status is one of Dapr's (STALLED and CONTINUED_AS_NEW included) and
        keeps its name."""
        assert {
            "PENDING": "PENDING",
            "RUNNING": "RUNNING",
            "COMPLETED": "COMPLETED",
            "FAILED": "FAILED",
            "TERMINATED": "TERMINATED",
            "SUSPENDED": "SUSPENDED",
            "STALLED": "STALLED",
            "CONTINUED_AS_NEW": "CONTINUED_AS_NEW",
        } == {s.value: dapr_status(s) for s in WorkflowStatus}


@pytest.mark.usefixtures("runtime")
class TestRaiseEvent:
    async def test_event_completes_a_waiting_workflow(
        self, api: Api, client: WorkflowClient
    ) -> None:
        """POST raiseEvent delivers the JSON body as the event's data."""
        await start(api, "approval", "r1", '"order-1"')
        await wait_for_status(client, "r1", WorkflowStatus.RUNNING)
        reply = await api.post(f"{WF}/r1/raiseEvent/approve", "true")
        state = await client.wait_for_workflow_completion("r1", timeout=20)
        assert (202, {"order": "order-1", "approved": True}) == (
            reply.status,
            json.loads(state.serialized_output or "null"),
        )

    async def test_event_data_that_is_not_json_is_a_string(
        self, api: Api, client: WorkflowClient
    ) -> None:
        """Event data that is not JSON is passed as-is: the event's data is that text."""
        await start(api, "approval", "r2", '"o"')
        await wait_for_status(client, "r2", WorkflowStatus.RUNNING)
        reply = await api.post(f"{WF}/r2/raiseEvent/approve", "not json")
        state = await client.wait_for_workflow_completion("r2", timeout=20)
        assert (202, {"order": "o", "approved": "not json"}) == (
            reply.status, json.loads(state.serialized_output or "null")
        )

    async def test_unknown_instance_is_404(self, api: Api) -> None:
        """Raising to an unknown id is 404 ERR_INSTANCE_ID_NOT_FOUND."""
        reply = await api.post(f"{WF}/nope/raiseEvent/approve", "true")
        assert (404, "ERR_INSTANCE_ID_NOT_FOUND") == (reply.status, reply.body["errorCode"])

    async def test_finished_instance(self, api: Api, client: WorkflowClient) -> None:
        """Raising to a finished instance is ERR_RAISE_EVENT_WORKFLOW (500) naming its status."""
        await start(api, "doubler", "r3", "1")
        await client.wait_for_workflow_completion("r3", timeout=20)
        reply = await api.post(f"{WF}/r3/raiseEvent/approve", "true")
        assert (500, "ERR_RAISE_EVENT_WORKFLOW") == (reply.status, reply.body["errorCode"])
        assert "COMPLETED" in reply.body["message"]


@pytest.mark.usefixtures("runtime")
class TestTerminate:
    async def test_terminates_a_running_instance(
        self, api: Api, client: WorkflowClient
    ) -> None:
        """POST terminate answers 202 and the instance ends TERMINATED."""
        await start(api, "approval", "t1", '"o"')
        await wait_for_status(client, "t1", WorkflowStatus.RUNNING)
        reply = await api.post(f"{WF}/t1/terminate")
        state = await client.wait_for_workflow_completion("t1", timeout=20)
        assert (202, None, "TERMINATED") == (
            reply.status,
            reply.body,
            (await api.get(f"{WF}/t1")).body["runtimeStatus"],
        )
        assert WorkflowStatus.TERMINATED == state.runtime_status

    async def test_unknown_instance_is_404(self, api: Api) -> None:
        """Terminating an unknown id is 404 ERR_INSTANCE_ID_NOT_FOUND."""
        reply = await api.post(f"{WF}/nope/terminate")
        assert (404, "ERR_INSTANCE_ID_NOT_FOUND") == (reply.status, reply.body["errorCode"])

    async def test_finished_instance(self, api: Api, client: WorkflowClient) -> None:
        """Terminating a finished instance is ERR_TERMINATE_WORKFLOW (500)."""
        await start(api, "doubler", "t2", "1")
        await client.wait_for_workflow_completion("t2", timeout=20)
        reply = await api.post(f"{WF}/t2/terminate")
        assert (500, "ERR_TERMINATE_WORKFLOW") == (reply.status, reply.body["errorCode"])


@pytest.mark.usefixtures("runtime")
class TestPauseResume:
    async def test_pause_shows_suspended_and_resume_continues(
        self, api: Api, client: WorkflowClient
    ) -> None:
        """pause makes GET say SUSPENDED; after resume the held event completes the instance."""
        await start(api, "approval", "p1", '"o"')
        await wait_for_status(client, "p1", WorkflowStatus.RUNNING)
        paused = await api.post(f"{WF}/p1/pause")
        await wait_for_status(client, "p1", WorkflowStatus.SUSPENDED)
        suspended = (await api.get(f"{WF}/p1")).body["runtimeStatus"]
        raised = await api.post(f"{WF}/p1/raiseEvent/approve", "false")
        resumed = await api.post(f"{WF}/p1/resume")
        state = await client.wait_for_workflow_completion("p1", timeout=20)
        assert ([202, 202, 202], "SUSPENDED", WorkflowStatus.COMPLETED) == (
            [paused.status, raised.status, resumed.status],
            suspended,
            state.runtime_status,
        )

    async def test_unknown_instance_is_404(self, api: Api) -> None:
        """Pausing or resuming an unknown id is 404 ERR_INSTANCE_ID_NOT_FOUND."""
        replies = [await api.post(f"{WF}/nope/{verb}") for verb in ("pause", "resume")]
        assert [(404, "ERR_INSTANCE_ID_NOT_FOUND")] * 2 == [
            (r.status, r.body["errorCode"]) for r in replies
        ]

    async def test_finished_instance(self, api: Api, client: WorkflowClient) -> None:
        """Pausing or resuming a finished instance is ERR_PAUSE / ERR_RESUME_WORKFLOW (500)."""
        await start(api, "doubler", "p2", "1")
        await client.wait_for_workflow_completion("p2", timeout=20)
        replies = [await api.post(f"{WF}/p2/{verb}") for verb in ("pause", "resume")]
        assert [(500, "ERR_PAUSE_WORKFLOW"), (500, "ERR_RESUME_WORKFLOW")] == [
            (r.status, r.body["errorCode"]) for r in replies
        ]


@pytest.mark.usefixtures("runtime")
class TestPurge:
    async def test_purged_instance_is_gone(self, api: Api, client: WorkflowClient) -> None:
        """POST purge answers 202 and the instance is then unknown (404)."""
        await start(api, "doubler", "x1", "1")
        await client.wait_for_workflow_completion("x1", timeout=20)
        reply = await api.post(f"{WF}/x1/purge")
        assert (202, 404) == (reply.status, (await api.get(f"{WF}/x1")).status)

    async def test_running_instance_is_refused(self, api: Api) -> None:
        """Purging a running instance is ERR_PURGE_WORKFLOW (500)."""
        await start(api, "approval", "x2", '"o"')
        reply = await api.post(f"{WF}/x2/purge")
        assert (500, "ERR_PURGE_WORKFLOW") == (reply.status, reply.body["errorCode"])

    async def test_unknown_instance_is_404(self, api: Api) -> None:
        """Purging an unknown id is 404 ERR_INSTANCE_ID_NOT_FOUND."""
        reply = await api.post(f"{WF}/nope/purge")
        assert (404, "ERR_INSTANCE_ID_NOT_FOUND") == (reply.status, reply.body["errorCode"])


_EXAMPLE_PARAMS = {
    "apiVersion": "v1.0",
    "workflowComponent": "dapr",
    "workflowName": "doubler",
    "instanceId": "no-such-instance",
    "eventName": "approve",
    "scheduleId": "nightly",
}
"""A value for each path parameter of the document."""


def _operations() -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path template, operation) of every operation in the document."""
    return [
        (method.upper(), template, item[method])
        for template, item in OPENAPI["paths"].items()
        for method in ("get", "post", "delete")
        if method in item
    ]


class TestDocument:
    def test_openapi_document_is_valid(self) -> None:
        """The OpenAPI document passes the OpenAPI 3.1 validator."""
        assert None is validate(OPENAPI)

    def test_guarded_operations_list_401_and_the_token_schemes(self) -> None:
        """Every operation but the public ones (security: []) lists the 401 of the API
        token, which may come as Dapr's dapr-api-token header or as a bearer token."""
        public = [
            f"{method} {template}"
            for method, template, operation in _operations()
            if operation.get("security") == []
        ]
        unlisted = [
            f"{method} {template}"
            for method, template, operation in _operations()
            if operation.get("security") != [] and "401" not in operation["responses"]
        ]
        schemes = OPENAPI["components"]["securitySchemes"]
        assert [
            "GET /{apiVersion}/healthz",
            "GET /{apiVersion}/healthz/outbound",
            "GET /openapi.json",
        ] == public
        assert [] == unlisted
        header, bearer = schemes["daprApiToken"], schemes["bearerToken"]
        assert ("apiKey", "header", "dapr-api-token") == (
            header["type"], header["in"], header["name"]
        )
        assert ("http", "bearer") == (bearer["type"], bearer["scheme"])
        assert [{"daprApiToken": []}, {"bearerToken": []}, {}] == OPENAPI["security"]

    async def test_the_document_lists_401_where_the_token_is_required(
        self, guarded_api: Api
    ) -> None:
        """On a server with an API token, a request without it gets 401 (as documented,
        the reply checked against the document) from exactly the operations that list 401;
        the public ones answer."""
        listed: dict[str, bool] = {}
        refused: dict[str, bool] = {}
        for method, template, operation in _operations():
            path = re.sub(r"\{(\w+)\}", lambda m: _EXAMPLE_PARAMS[m.group(1)], template)
            reply = await guarded_api.call(method, path)
            listed[f"{method} {template}"] = "401" in operation["responses"]
            refused[f"{method} {template}"] = 401 == reply.status
        assert listed == refused
        assert 3 == list(refused.values()).count(False)

    async def test_document_is_served(self, api: Api) -> None:
        """GET /openapi.json serves the document."""
        reply = await api.get("/openapi.json")
        assert (200, OPENAPI) == (reply.status, reply.body)

    async def test_health_endpoints(self, api: Api) -> None:
        """The sidecar health endpoints Dapr SDKs wait for answer 204."""
        replies = [await api.get(p) for p in ("/v1.0/healthz", "/v1.0/healthz/outbound")]
        assert [204, 204] == [r.status for r in replies]

    async def test_metadata(self, api: Api) -> None:
        """GET /v1.0/metadata answers as a sidecar: the app id and the workflow component."""
        reply = await api.get("/v1.0/metadata")
        assert (200, "jetloom", [("dapr", "workflow.dapr", "v1")]) == (
            reply.status,
            reply.body["id"],
            [(c["name"], c["type"], c["version"]) for c in reply.body["components"]],
        )
