"""The API token: a request without it gets 401 and changes nothing; the token is accepted as
Dapr's header, as a bearer token, and as the console's session cookie."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import ClientSession, CookieJar

from engine import WorkflowClient, WorkflowStatus
from tests.console.conftest import API_TOKEN

pytestmark = pytest.mark.usefixtures("runtime")


@pytest.fixture
async def http() -> AsyncIterator[ClientSession]:
    """An HTTP client with its own cookie jar (which, like a browser's, keeps cookies of a
    server addressed by IP)."""
    async with ClientSession(cookie_jar=CookieJar(unsafe=True)) as session:
        yield session


async def started(client: WorkflowClient, instance_id: str) -> str:
    await client.schedule_new_workflow("approval", input="o-1", instance_id=instance_id)
    await client.wait_for_workflow_start(instance_id)
    return instance_id


class TestApiToken:
    async def test_a_request_without_the_token_is_refused_and_changes_nothing(
        self, guarded_console, http, client
    ):
        """Terminate without the token is 401; the instance then completes on its event, so
        the refused terminate never reached it."""
        iid = await started(client, "guarded-1")
        base = guarded_console
        async with http.post(f"{base}v1.0/workflows/dapr/{iid}/terminate") as refused:
            assert 401 == refused.status
            assert "ERR_UNAUTHORIZED" == (await refused.json())["errorCode"]
        async with http.post(
            f"{base}v1.0/workflows/dapr/{iid}/raiseEvent/approve",
            data="true", headers={"dapr-api-token": API_TOKEN},
        ) as raised:
            assert 202 == raised.status
        state = await client.wait_for_workflow_completion(iid, timeout=30)
        assert WorkflowStatus.COMPLETED == state.runtime_status

    async def test_reads_need_the_token_too(self, guarded_console, http):
        """The console's data and the Dapr API answer 401 without the token, a wrong token or
        a bearer of another value; the right header or bearer token gets through."""
        url = f"{guarded_console}console/api/instances"
        statuses = []
        for headers in (
            {},
            {"dapr-api-token": "wrong"},
            {"Authorization": "Bearer wrong"},
            {"dapr-api-token": API_TOKEN},
            {"Authorization": f"Bearer {API_TOKEN}"},
        ):
            async with http.get(url, headers=headers) as response:
                statuses.append(response.status)
        assert [401, 401, 401, 200, 200] == statuses

    async def test_the_page_and_health_checks_stay_public(self, guarded_console, http):
        """The page, its files, its configuration and Dapr's health checks need no token."""
        statuses = []
        for path in ("", "console/static/js/app.js", "console/api/config", "v1.0/healthz"):
            async with http.get(guarded_console + path) as response:
                statuses.append(response.status)
        assert [200, 200, 200, 204] == statuses
        async with http.get(guarded_console + "console/api/config") as response:
            config = await response.json()
        assert (True, False) == (config["token_required"], config["authenticated"])

    async def test_the_session_cookie_of_a_login(self, guarded_console, http, client):
        """A login with the right token sets the session cookie, which reads and (from the
        console's own origin) acts; a wrong token sets nothing."""
        iid = await started(client, "guarded-2")
        login = f"{guarded_console}console/api/login"
        async with http.post(login, json={"token": "wrong"}) as wrong:
            assert 401 == wrong.status
        async with http.post(login, json={"token": API_TOKEN}) as right:
            assert 204 == right.status
        async with http.get(f"{guarded_console}console/api/instances/{iid}") as read:
            assert 200 == read.status
        terminate = f"{guarded_console}v1.0/workflows/dapr/{iid}/terminate"
        async with http.post(terminate, headers={"Origin": "http://evil.test"}) as cross_site:
            assert 401 == cross_site.status
        origin = guarded_console.rstrip("/")
        async with http.post(terminate, headers={"Origin": origin}) as same_site:
            assert 202 == same_site.status
        state = await client.wait_for_workflow_completion(iid, timeout=30)
        assert WorkflowStatus.TERMINATED == state.runtime_status
