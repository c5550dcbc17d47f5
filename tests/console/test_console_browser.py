"""The console in Chromium, on a real nats-server: the live list while sagas run (every service
a process), the order saga's timeline, actions from the page, the token, the health page."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from playwright.async_api import Locator, Page, expect

from brokers import connect_nats
from engine import WorkflowStatus
from tests.console.conftest import API_TOKEN, JAEGER_URL
from tests.sample.test_order_saga import Fleet


@pytest.fixture
async def fleet(nats_url: str, prefix: str, tmp_path: Path) -> AsyncIterator[Fleet]:
    """The order saga's services (inventory, three providers, shipping, orchestrator) as
    processes on the test's namespace."""
    services = Fleet(nats_url, prefix, tmp_path)
    try:
        yield services
    finally:
        await services.stop_all()


async def boxes(items: Locator) -> list[dict[str, Any]]:
    """The on-screen boxes of the matched elements, left to right."""
    found = [await items.nth(i).bounding_box() for i in range(await items.count())]
    assert all(box is not None for box in found)
    return sorted(found, key=lambda b: b["x"])  # type: ignore[index]


def instance_row(page: Page, instance_id: str) -> Locator:
    return page.locator(f'table.instances tr[data-instance="{instance_id}"]')


class TestInstanceList:
    async def test_the_list_updates_live_while_sagas_run(self, fleet, console, page):
        """Orders placed after the page opened appear and reach COMPLETED without a reload,
        with their counts."""
        await fleet.start_saga({"widget": 10, "gizmo": 1})
        await page.goto(console)
        loaded = page.locator("table.instances")
        await expect(loaded).to_have_attribute("data-version", re.compile(r"\d"))
        await page.evaluate("window.notReloaded = true")
        await fleet.place_order("live-1", "widget", 1)
        await fleet.place_order("live-2", "widget", 2)
        await fleet.place_order("live-3", "gizmo", 5)  # rejected: not enough stock
        for order in ("live-1", "live-2", "live-3"):
            await expect(instance_row(page, order)).to_have_attribute("data-status", "COMPLETED")
        await expect(page.locator('.chip[data-status="COMPLETED"] .count')).to_have_text("3")
        await expect(page.locator("#last-change")).to_contain_text("last change")
        assert await page.evaluate("window.notReloaded === true")

    async def test_filters_search_and_pages(self, runtime, client, console, page):
        """Status chips, the id search and the pager narrow the list on the server."""
        for n in range(7):
            await client.schedule_new_workflow("approval", input=n, instance_id=f"page-{n}")
        await client.schedule_new_workflow("doubler", input=2, instance_id="doubled")
        await client.wait_for_workflow_completion("doubled", timeout=30)
        await page.goto(f"{console}#/?size=25")
        await expect(page.locator("#page-info")).to_contain_text("of 8")
        await page.locator('.chip[data-status="COMPLETED"]').click()
        await expect(page.locator("table.instances tr[data-instance]")).to_have_count(1)
        await page.locator('.chip[data-status="ALL"]').click()
        await page.locator("#search").fill("page-")
        await expect(page.locator("#page-info")).to_contain_text("of 7")
        await page.goto(f"{console}#/?q=page-&size=25&page=1")
        await expect(instance_row(page, "page-6")).to_be_visible()
        assert "q=page-" in page.url


class TestInstancePage:
    async def test_the_order_saga_timeline(self, fleet, console, page, client):
        """An order's timeline shows the three quotes as overlapping bars; a failing shipment
        shows each attempt as its own bar, and the compensation after the last one."""
        await fleet.start_saga({"widget": 5, "sprocket": 5}, attempts=3)
        await fleet.place_order("quotes-1", "widget", 1)
        await fleet.place_order("fail-ship-1", "sprocket", 1)
        await client.wait_for_workflow_completion("quotes-1", timeout=30)
        await client.wait_for_workflow_completion("fail-ship-1", timeout=30)

        await page.goto(f"{console}#/instance/quotes-1")
        quotes = page.locator("#timeline .vis-item.kind-activity.group-activity-get_quote")
        await expect(quotes).to_have_count(3)
        bars = await boxes(quotes)
        assert max(b["x"] for b in bars) < min(b["x"] + b["width"] for b in bars)
        assert 3 == len({b["y"] for b in bars})  # stacked, one above the other
        await expect(page.locator("#instance-status")).to_have_text("COMPLETED")
        await expect(page.locator("#history tbody tr")).not_to_have_count(0)
        link = page.locator("#trace-link")
        assert (await link.get_attribute("href") or "").startswith(f"{JAEGER_URL}/trace/")

        await page.goto(f"{console}#/instance/fail-ship-1")
        attempts = page.locator(
            "#timeline .vis-item.kind-activity.group-activity-register_shipment"
        )
        await expect(attempts).to_have_count(3)
        await expect(attempts.filter(has_text="attempt 3")).to_have_count(1)
        await expect(attempts.and_(page.locator(".outcome-failed"))).to_have_count(3)
        restore = page.locator("#timeline .vis-item.kind-activity.group-activity-restore")
        await expect(restore).to_have_count(1)
        last_attempt = (await boxes(attempts))[-1]
        compensation = (await boxes(restore))[0]
        assert compensation["x"] > last_attempt["x"]
        reply = await page.request.get(f"{console}console/api/instances/fail-ship-1")
        detail = await reply.json()
        ends = {i["label"]: (i["start"], i["end"]) for i in detail["timeline"]["items"]}
        assert ends["restore @inventory"][0] >= ends["register_shipment @shipping (attempt 3)"][1]
        await expect(page.locator("#output")).to_contain_text("compensated")

    async def test_terminate_from_the_page_ends_a_running_instance(
        self, runtime, client, console, page
    ):
        """Terminate asks for confirmation, then the instance ends as TERMINATED, shown live."""
        await client.schedule_new_workflow("approval", input="o-1", instance_id="to-stop")
        await client.wait_for_workflow_start("to-stop")
        await page.goto(f"{console}#/instance/to-stop")
        await expect(page.locator("#instance-status")).to_have_text("RUNNING")
        await page.locator('button[data-action="terminate"]').click()
        await expect(page.locator("#action-dialog")).to_be_visible()
        await page.locator("#action-confirm").click()
        await expect(page.locator("#instance-status")).to_have_text("TERMINATED")
        state = await client.wait_for_workflow_completion("to-stop", timeout=30)
        assert WorkflowStatus.TERMINATED == state.runtime_status
        await expect(page.locator('button[data-action="purge"]')).to_be_enabled()

    async def test_raise_event_from_the_page(self, runtime, client, console, page):
        """An event raised with JSON data from the page completes the waiting instance."""
        await client.schedule_new_workflow("approval", input="o-2", instance_id="to-approve")
        await client.wait_for_workflow_start("to-approve")
        await page.goto(f"{console}#/instance/to-approve")
        await page.locator('button[data-action="raise"]').click()
        await page.locator('#action-fields input[name="event"]').fill("approve")
        await page.locator('#action-fields textarea[name="data"]').fill("not json")
        await page.locator("#action-confirm").click()
        await expect(page.locator("#action-error")).to_contain_text("not valid JSON")
        await page.locator('#action-fields textarea[name="data"]').fill('{"by": "console"}')
        await page.locator("#action-confirm").click()
        await expect(page.locator("#instance-status")).to_have_text("COMPLETED")
        await expect(page.locator("#output")).to_contain_text("console")
        await expect(page.locator("#timeline .vis-point.kind-event")).to_have_count(1)


class TestToken:
    async def test_the_console_asks_for_the_token_and_shows_refusals(
        self, runtime, client, guarded_console, page
    ):
        """Without the token the page shows only the token prompt; a wrong token is refused,
        the right one opens the console; an action refused by the API shows its error line."""
        await client.schedule_new_workflow("approval", input="o-3", instance_id="guarded")
        await client.wait_for_workflow_start("guarded")
        await page.goto(f"{guarded_console}#/instance/guarded")
        await expect(page.locator("#login-dialog")).to_be_visible()
        await expect(page.locator("#instance-status")).to_have_count(0)
        await page.locator("#login-token").fill("wrong")
        await page.locator("#login-form button").click()
        await expect(page.locator("#login-error")).to_have_text("wrong token")
        await page.locator("#login-token").fill(API_TOKEN)
        await page.locator("#login-form button").click()
        await expect(page.locator("#instance-status")).to_have_text("RUNNING")

        await page.context.clear_cookies()  # the session ends: the API refuses the action
        await page.locator('button[data-action="pause"]').click()
        await page.locator("#action-confirm").click()
        await expect(page.locator("#action-error")).to_contain_text("ERR_UNAUTHORIZED")
        state = await client.get_workflow_state("guarded")
        assert state is not None and WorkflowStatus.RUNNING == state.runtime_status


class TestHealthPage:
    async def test_workers_queues_and_dead_letters(
        self, runtime, console, page, nats_url, prefix
    ):
        """The health page lists the in-process worker, its task queue and a start event that
        could not be used, with the reason."""
        nc: NATS = await connect_nats(nats_url)
        try:
            await nc.jetstream().publish(f"{prefix}.start.approval", b"{not json")
        finally:
            await nc.close()
        await page.goto(f"{console}#/health")
        await expect(page.locator("#workers tbody tr")).to_contain_text("approval")
        consumer = page.locator('#consumers tr[data-consumer="activities-default"]')
        await expect(consumer).to_be_visible()
        await expect(page.locator("#dead-letters tbody tr").first).to_contain_text(
            f"{prefix}.start.approval"
        )
