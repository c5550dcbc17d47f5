"""The console's JSON endpoints and event stream over HTTP, on a real nats-server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import ClientResponse, ClientSession

from engine import WorkflowClient

pytestmark = pytest.mark.usefixtures("runtime")


@pytest.fixture
async def http() -> AsyncIterator[ClientSession]:
    """An HTTP client."""
    async with ClientSession() as session:
        yield session


async def changes(response: ClientResponse) -> AsyncIterator[dict[str, Any]]:
    """The ``changes`` events of a server-sent event stream, as they come."""
    event = ""
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[len("event: "):]
        elif line.startswith("data: ") and event == "changes":
            yield json.loads(line[len("data: "):])


class TestInstancesEndpoint:
    async def test_the_event_stream_follows_starts_and_purges(
        self, console, http, client: WorkflowClient
    ):
        """The stream reports every instance once it exists and counts it out once purged;
        the list then pages over what is left."""
        async with http.get(f"{console}console/api/events") as stream:
            events = changes(stream)
            assert 0 == (await anext(events))["total"]
            for n in range(3):
                await client.schedule_new_workflow("doubler", input=n, instance_id=f"d-{n}")
                await client.wait_for_workflow_completion(f"d-{n}", timeout=30)
            async for state in events:
                if state["counts"]["COMPLETED"] == 3:
                    break
            await client.purge_workflow("d-1")
            async for state in events:
                if state["total"] == 2:
                    break
        async with http.get(f"{console}console/api/instances?limit=1&offset=1") as response:
            page = await response.json()
        assert (2, ["d-0"], {"doubler": 2}) == (
            page["matched"], [i["instance_id"] for i in page["items"]], page["workflows"]
        )

    async def test_a_bad_query_says_what_is_wrong(self, console, http):
        """An unknown status is a 400 naming the statuses there are."""
        async with http.get(f"{console}console/api/instances?status=SLEEPY") as response:
            assert 400 == response.status
            assert "status is one of PENDING, RUNNING" in (await response.json())["message"]


class TestInstanceEndpoint:
    async def test_detail_of_a_finished_instance(self, console, http, client):
        """State with decoded payloads, history rows, the activity's bar, a trace link."""
        await client.schedule_new_workflow("doubler", input=21, instance_id="d-42")
        await client.wait_for_workflow_completion("d-42", timeout=30)
        async with http.get(f"{console}console/api/instances/d-42") as response:
            detail = await response.json()
        assert ("COMPLETED", 21, 42) == (
            detail["state"]["status"], detail["state"]["input"], detail["state"]["output"]
        )
        assert "execution_started" == detail["history"][0]["type"]
        assert [("double", "completed")] == [
            (i["label"], i["outcome"]) for i in detail["timeline"]["items"]
            if i["kind"] == "activity"
        ]
        assert detail["trace"]["url"].endswith(f"/trace/{detail['trace']['trace_id']}")

    async def test_unknown_and_invalid_ids(self, console, http):
        """An unknown id is a 404, an id that cannot exist a 400, each with a message."""
        async with http.get(f"{console}console/api/instances/nope") as unknown:
            assert 404 == unknown.status
        async with http.get(f"{console}console/api/instances/{'x' * 80}") as invalid:
            assert 400 == invalid.status
            assert "64" in (await invalid.json())["message"]
