"""Retention on a real server: finished instances are purged once their time has passed, by
the message schedule their last workflow task set, and storage goes back near empty."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import pytest

from brokers import JetStreamBroker, Subjects, connect_nats, storage_stats
from engine import (
    InstanceNotFoundError,
    RetentionPolicy,
    WorkflowClient,
    WorkflowContext,
    WorkflowRuntime,
    WorkflowStatus,
    when_all,
)

SECOND = timedelta(seconds=1)
SAGAS = int(os.environ.get("JETLOOM_RETENTION_SAGAS", "300"))
"""Sagas of the storage test (the issue's 5,000: JETLOOM_RETENTION_SAGAS=5000)."""


@pytest.fixture
async def broker(nats_url: str, prefix: str) -> AsyncIterator[JetStreamBroker]:
    nc = await connect_nats(nats_url)
    yield JetStreamBroker(nc, Subjects(prefix))
    await nc.close()


def runtime(nats_url: str, prefix: str, policy: RetentionPolicy | None, **options: object
            ) -> WorkflowRuntime:
    """A runtime hosting ``saga`` (three activities, a child workflow) and ``doomed``."""
    wfr = WorkflowRuntime(nats_url, prefix=prefix, retention=policy,
                          large_payload_threshold=1024, **options)  # type: ignore[arg-type]

    @wfr.activity
    async def count(ctx: object, x: int) -> int:
        return 2 * x

    @wfr.workflow
    async def child(ctx: WorkflowContext, x: int) -> int:
        return await ctx.call_activity(count, input=x)

    @wfr.workflow
    async def saga(ctx: WorkflowContext, base: int) -> int:
        first = await ctx.call_activity(count, input=base)
        rest = await when_all([ctx.call_activity(count, input=base + i) for i in (1, 2)])
        return first + sum(rest)

    @wfr.workflow
    async def with_child(ctx: WorkflowContext, text: str) -> str:
        doubled = await ctx.call_child_workflow(child, input=len(text))
        return text * 2 + str(doubled)  # large: kept in the Object Store

    @wfr.workflow
    async def doomed(ctx: WorkflowContext) -> None:
        raise RuntimeError("always fails")

    @wfr.workflow
    async def waits(ctx: WorkflowContext) -> str:
        return str(await ctx.wait_for_external_event("go"))

    return wfr


async def eventually(check: Callable[[], object], timeout: float = 30) -> None:
    """Wait (polling: this is what the test observes, not how jetloom works) until ``check``
    is true."""
    deadline = time.monotonic() + timeout
    while True:
        outcome = check()
        if asyncio.iscoroutine(outcome):
            outcome = await outcome
        if outcome:
            return
        assert time.monotonic() < deadline, f"not true within {timeout}s: {check}"
        await asyncio.sleep(0.2)


async def gone(client: WorkflowClient, instance_id: str) -> bool:
    return await client.get_workflow_state(instance_id) is None


async def usage(broker: JetStreamBroker) -> dict[str, tuple[int, int]]:
    """Messages and bytes per stream of the prefix."""
    return {u.name: (u.messages, u.bytes) for u in await storage_stats(broker)}


class TestRetention:
    async def test_a_finished_instance_is_purged_when_its_time_has_passed(
        self, nats_url, prefix, client, broker
    ):
        """History, record, the payloads it stored and its child go, as purge_workflow does;
        nothing is left of them in the streams."""
        async with runtime(nats_url, prefix, RetentionPolicy(completed=SECOND)):
            await client.schedule_new_workflow("with_child", input="x" * 2000, instance_id="p")
            state = await client.wait_for_workflow_completion("p", timeout=30)
            assert WorkflowStatus.COMPLETED == state.runtime_status
            assert (await usage(broker))[f"OBJ_{prefix}_payloads"][0] > 0

            await eventually(lambda: gone(client, "p"))
            await eventually(lambda: gone(client, "p-1"))
        with pytest.raises(InstanceNotFoundError):
            await client.get_history("p")
        assert 0 == (await usage(broker))[f"OBJ_{prefix}_payloads"][1]

    async def test_statuses_without_a_duration_are_kept(self, nats_url, prefix, client):
        """A policy for COMPLETED only keeps FAILED instances."""
        async with runtime(nats_url, prefix, RetentionPolicy(completed=SECOND)):
            await client.schedule_new_workflow("doomed", instance_id="f")
            await client.schedule_new_workflow("saga", input=1, instance_id="c")
            await client.wait_for_workflow_completion("f", timeout=30)
            await eventually(lambda: gone(client, "c"))
            state = await client.get_workflow_state("f")
        assert state is not None and WorkflowStatus.FAILED == state.runtime_status

    async def test_the_policy_applies_to_instances_finishing_after_it_is_set(
        self, nats_url, prefix, client
    ):
        """An instance that finished under a runtime without retention stays; one that
        finishes once the policy is deployed goes."""
        async with runtime(nats_url, prefix, None):
            await client.schedule_new_workflow("saga", input=1, instance_id="before")
            await client.wait_for_workflow_completion("before", timeout=30)
        async with runtime(nats_url, prefix, RetentionPolicy(any_terminal=SECOND)):
            await client.schedule_new_workflow("saga", input=2, instance_id="after")
            await eventually(lambda: gone(client, "after"))
        assert await client.get_workflow_state("before") is not None

    async def test_an_id_started_again_keeps_its_new_run(self, nats_url, prefix, client):
        """The retention of a finished run does not purge the new run of the same id."""
        async with runtime(nats_url, prefix, RetentionPolicy(completed=2 * SECOND)):
            await client.schedule_new_workflow("saga", input=1, instance_id="again")
            await client.wait_for_workflow_completion("again", timeout=30)
            await client.schedule_new_workflow("waits", instance_id="again")
            await asyncio.sleep(4)  # past the first run's retention
            state = await client.get_workflow_state("again")
            assert state is not None and WorkflowStatus.RUNNING == state.runtime_status
            await client.raise_workflow_event("again", "go", data="now")
            await client.wait_for_workflow_completion("again", timeout=30)
            await eventually(lambda: gone(client, "again"))

    @pytest.mark.slow
    @pytest.mark.timeout(900)
    async def test_many_sagas_leave_the_streams_near_empty(
        self, nats_url, prefix, client, broker
    ):
        """Finishing many sagas with a short retention (and short-lived dispatch copies)
        ends with the history, work and payload streams empty and no instance record."""
        options = {"dispatch_ttl": 2 * SECOND, "max_concurrent_workflow_tasks": 200}
        async with runtime(nats_url, prefix, RetentionPolicy(any_terminal=SECOND), **options):
            started = time.monotonic()
            waits = []
            for i in range(SAGAS):
                # Each wait starts with its instance: one that finished and was purged
                # before its wait began would never be seen.
                iid = await client.schedule_new_workflow("saga", input=i)
                waits.append(asyncio.create_task(
                    client.wait_for_workflow_completion(iid, timeout=600)
                ))
            await asyncio.gather(*waits)
            peak = await usage(broker)
            print(f"\n{SAGAS} sagas in {time.monotonic() - started:.1f}s; at the end: {peak}")

            async def drained() -> bool:
                now = await usage(broker)
                return all(
                    now[s][0] == 0
                    for s in (f"{prefix.upper()}_HISTORY", f"{prefix.upper()}_WORK",
                              f"OBJ_{prefix}_payloads")
                )

            await eventually(drained, timeout=120)
            assert [] == [s async for s in client.list_workflows()]
            final = await usage(broker)
            print(f"after retention: {final}")
        records = final[f"KV_{prefix}_instances"]
        assert records[1] <= 200 * SAGAS  # at most the purge markers, which expire in a minute
