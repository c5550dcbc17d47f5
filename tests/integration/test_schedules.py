"""Recurring schedules fired by nats-server itself, on a real server."""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from engine import (
    ActivityContext,
    ScheduleAlreadyExistsError,
    ScheduleNotFoundError,
    WorkflowClient,
    WorkflowContext,
    WorkflowRuntime,
    WorkflowStatus,
)
from engine.core.schedules import TICK_FORMAT, firing_instance_id

SECOND = timedelta(seconds=1)
KATHMANDU = "Asia/Kathmandu"
"""UTC+05:45 all year: its wall-clock minutes are never UTC's."""


def reporter(nats_url: str, prefix: str, effects: list[str]) -> WorkflowRuntime:
    """``report`` runs one ``render`` activity (each run appends the instance to
    ``effects``); ``held`` waits for an event."""
    wfr = WorkflowRuntime(nats_url, prefix=prefix)

    @wfr.activity
    async def render(ctx: ActivityContext, title: str) -> str:
        effects.append(ctx.workflow_id)
        return f"{title}.pdf"

    @wfr.workflow
    async def report(ctx: WorkflowContext, title: str) -> str:
        return await ctx.call_activity(render, input=title)

    @wfr.workflow
    async def held(ctx: WorkflowContext) -> str:
        return str(await ctx.wait_for_external_event("release"))

    return wfr


async def instances_of(client: WorkflowClient, schedule_id: str) -> dict[str, WorkflowStatus]:
    """The instances a schedule started, by id."""
    return {
        s.instance_id: s.runtime_status
        async for s in client.list_workflows()
        if s.instance_id.startswith(f"{schedule_id}-")
    }


def tick(instance_id: str) -> datetime:
    return datetime.strptime(instance_id.rsplit("-", 1)[1], TICK_FORMAT).replace(tzinfo=UTC)


async def until(predicate, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    """Poll what the test observes until ``predicate`` (a coroutine function) is true."""
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "not reached in time"
        await asyncio.sleep(0.2)


class TestSchedules:
    async def test_each_tick_starts_exactly_one_instance(self, nats_url, prefix, client):
        """Two workers compete for the firings of an every-second schedule: each tick starts
        one instance, named by its tick, which runs its activity once."""
        effects: list[str] = []
        async with reporter(nats_url, prefix, effects), reporter(nats_url, prefix, effects):
            await client.create_schedule(
                "daily-report", "report", every=SECOND, input="sales", overlap="allow"
            )

            async def four_done() -> bool:
                done = await instances_of(client, "daily-report")
                return sum(s is WorkflowStatus.COMPLETED for s in done.values()) >= 4

            await until(four_done)
            await client.pause_schedule("daily-report")
            await asyncio.sleep(1.5)  # firings already made, if any, are handled
            started = await instances_of(client, "daily-report")
        ticks = sorted(tick(i) for i in started)
        assert [SECOND] * (len(ticks) - 1) == [b - a for a, b in itertools.pairwise(ticks)]
        assert sorted(started) == sorted(effects)  # one activity run per instance
        assert {WorkflowStatus.COMPLETED} == set(started.values())

    async def test_overlap_skip_waits_for_the_previous_instance(self, nats_url, prefix, client):
        """With overlap='skip', firings while the last instance runs start nothing."""
        async with reporter(nats_url, prefix, []):
            await client.create_schedule("hold", "held", every=SECOND)
            await until(lambda: _count(client, "hold", 1))
            await asyncio.sleep(2.5)  # two or three more ticks, all skipped
            [first] = await instances_of(client, "hold")
            await client.raise_workflow_event(first, "release", data="go")
            await until(lambda: _count(client, "hold", 2))
            await client.delete_schedule("hold")
        assert WorkflowStatus.COMPLETED == (await client.get_workflow_state(first)).runtime_status

    async def test_firings_wait_for_a_worker(self, nats_url, prefix, client):
        """The server fires with no jetloom process running; the first worker to start
        takes the firings and starts their instances."""
        await client.create_schedule("nightly", "report", every=SECOND, input="x",
                                     overlap="allow")
        await asyncio.sleep(3.2)
        assert {} == await instances_of(client, "nightly")
        worker_started = datetime.now(UTC)
        async with reporter(nats_url, prefix, []):
            await until(lambda: _count(client, "nightly", 3))
            await client.delete_schedule("nightly")
        early = [i for i in await instances_of(client, "nightly") if tick(i) < worker_started]
        assert 3 <= len(early)

    async def test_list_pause_resume_delete(self, nats_url, prefix, client):
        """Schedules are listed with their definition and state; pause stops the firings,
        resume brings them back, delete removes the schedule."""
        await client.create_schedule("weekdays", "report", cron="0 9 * * MON-FRI", input="w")
        await client.create_schedule("often", "report", every=timedelta(minutes=5))
        await client.pause_schedule("often")

        listed = await client.list_schedules()

        assert ["often", "weekdays"] == [s.schedule_id for s in listed]
        often, weekdays = listed
        assert (None, timedelta(minutes=5), True) == (often.cron, often.every, often.paused)
        assert ("0 0 9 * * MON-FRI", None, '"w"', "skip") == (
            weekdays.cron, weekdays.every, weekdays.serialized_input, weekdays.overlap
        )
        await client.resume_schedule("often")
        [often] = [s for s in await client.list_schedules() if s.schedule_id == "often"]
        assert not often.paused
        await client.delete_schedule("often")
        assert ["weekdays"] == [s.schedule_id for s in await client.list_schedules()]

    async def test_mistakes_are_refused(self, nats_url, prefix, client):
        """An existing id, an unknown one, a bad cron expression and a bad overlap."""
        await client.create_schedule("s", "report", every=SECOND)
        with pytest.raises(ScheduleAlreadyExistsError):
            await client.create_schedule("s", "report", every=SECOND)
        with pytest.raises(ScheduleNotFoundError):
            await client.pause_schedule("missing")
        with pytest.raises(ValueError, match="invalid cron expression"):
            await client.create_schedule("t", "report", cron="every day")
        with pytest.raises(ValueError, match="invalid overlap"):
            await client.create_schedule("u", "report", every=SECOND, overlap="queue")
        await client.delete_schedule("s")


class TestScheduleTimeZones:
    async def test_a_cron_fires_on_the_wall_clock_of_its_zone(
        self, nats_url, prefix, client, broker
    ):
        """A six-field cron firing every second of this minute and the next, as read in
        Kathmandu (never the same minutes in UTC): the server takes the zone and fires now,
        and each firing starts the instance named by its own tick, read in the zone."""
        zone = ZoneInfo(KATHMANDU)
        now, then = datetime.now(zone), datetime.now(zone) + timedelta(minutes=1)
        cron = f"* {now.minute},{then.minute} {now.hour},{then.hour} * * *"
        created = datetime.now(UTC).replace(microsecond=0)
        async with reporter(nats_url, prefix, []):
            await client.create_schedule(
                "kathmandu", "report", cron=cron, input="tz", overlap="allow",
                time_zone=KATHMANDU,
            )
            stored = await broker.js.get_last_msg(
                broker.subjects.history_stream, broker.subjects.schedule("kathmandu")
            )
            await until(lambda: _count(client, "kathmandu", 2))
            await client.delete_schedule("kathmandu")
            started = await instances_of(client, "kathmandu")
        ticks = sorted(tick(i) for i in started)
        assert (KATHMANDU, cron) == (
            stored.headers["Nats-Schedule-Time-Zone"], stored.headers["Nats-Schedule"]
        )
        assert sorted(started) == [firing_instance_id("kathmandu", t) for t in ticks]
        assert [SECOND] * (len(ticks) - 1) == [b - a for a, b in itertools.pairwise(ticks)]
        assert created <= ticks[0]  # a tick of this minute, not one from hours before
        assert all(
            (t.astimezone(zone).hour, t.astimezone(zone).minute)
            in {(now.hour, now.minute), (then.hour, then.minute)}
            for t in ticks
        )

    async def test_the_zone_is_listed_and_mistakes_are_refused(self, nats_url, prefix, client):
        """A schedule's zone is listed with it; an unknown zone, or one with an interval, is
        refused before anything is stored."""
        await client.create_schedule(
            "amsterdam", "report", cron="30 2 * * *", time_zone="Europe/Amsterdam"
        )
        with pytest.raises(ValueError, match="unknown time zone 'Europe/Amsterdm'"):
            await client.create_schedule(
                "typo", "report", cron="30 2 * * *", time_zone="Europe/Amsterdm"
            )
        with pytest.raises(ValueError, match="only cron schedules take a time zone"):
            await client.create_schedule(
                "interval", "report", every=SECOND, time_zone="Europe/Amsterdam"
            )

        listed = await client.list_schedules()

        assert [("amsterdam", "0 30 2 * * *", "Europe/Amsterdam")] == [
            (s.schedule_id, s.cron, s.time_zone) for s in listed
        ]
        await client.delete_schedule("amsterdam")


async def _count(client: WorkflowClient, schedule_id: str, at_least: int) -> bool:
    return len(await instances_of(client, schedule_id)) >= at_least
