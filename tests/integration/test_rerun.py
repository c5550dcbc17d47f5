"""Rerunning a finished instance from one of its activities, on a real server."""

from __future__ import annotations

import pytest

from engine import (
    ActivityContext,
    InstanceAlreadyRunningError,
    InstanceNotFoundError,
    TaskScheduled,
    WorkflowContext,
    WorkflowRuntime,
    WorkflowStatus,
)


def shop(nats_url: str, prefix: str, *, fixed: bool, calls: list[tuple[str, object]]
         ) -> WorkflowRuntime:
    """``checkout``: reserve, charge (which fails on a bad card until ``fixed``), ship."""
    wfr = WorkflowRuntime(nats_url, prefix=prefix)

    @wfr.activity
    async def reserve(ctx: ActivityContext, order: str) -> str:
        calls.append(("reserve", order))
        return f"{order}:reserved"

    @wfr.activity
    async def charge(ctx: ActivityContext, card: str) -> str:
        calls.append(("charge", card))
        if card == "expired" and not fixed:
            raise ValueError("card expired")
        return f"charged {card}"

    @wfr.activity
    async def ship(ctx: ActivityContext, order: str) -> str:
        calls.append(("ship", ctx.task_execution_id))
        return f"{order}:shipped"

    @wfr.workflow
    async def checkout(ctx: WorkflowContext, order: str) -> list[str]:
        reserved = await ctx.call_activity(reserve, input=order)
        charged = await ctx.call_activity(charge, input="expired")
        shipped = await ctx.call_activity(ship, input=order)
        return [reserved, charged, shipped]

    @wfr.workflow
    async def waits(ctx: WorkflowContext) -> str:
        await ctx.call_activity(reserve, input="x")
        return str(await ctx.wait_for_external_event("go"))

    return wfr


def positions(history: list[object], name: str) -> list[int]:
    """Event ids (history positions) of the task_scheduled events of activity ``name``."""
    return [i for i, e in enumerate(history) if isinstance(e, TaskScheduled) and e.name == name]


class TestRerunFromEvent:
    async def test_a_failed_run_is_rerun_from_the_failing_activity_with_a_new_input(
        self, nats_url, prefix, client
    ):
        """The activity at the event id runs again with the new input, the rest of the
        workflow follows; the activities before it are not run again."""
        calls: list[tuple[str, object]] = []
        async with shop(nats_url, prefix, fixed=False, calls=calls):
            await client.schedule_new_workflow("checkout", input="o-1", instance_id="o-1")
            failed = await client.wait_for_workflow_completion("o-1", timeout=30)
            source_history = await client.get_history("o-1")
            [event_id] = positions(source_history, "charge")
            calls.clear()

            new_id = await client.rerun_workflow_from_event(
                "o-1", event_id, input="visa", overwrite_input=True
            )
            rerun = await client.wait_for_workflow_completion(new_id, timeout=30)
            assert source_history == await client.get_history("o-1")  # the source is unchanged
        assert WorkflowStatus.FAILED == failed.runtime_status
        assert WorkflowStatus.COMPLETED == rerun.runtime_status
        assert '["o-1:reserved","charged visa","o-1:shipped"]' == rerun.serialized_output
        assert ["charge", "ship"] == [name for name, _ in calls]

    async def test_the_rerun_follows_the_code_as_deployed_now(self, nats_url, prefix, client):
        """A run that failed on a bug, rerun after the fix is deployed, completes with the
        same input."""
        calls: list[tuple[str, object]] = []
        async with shop(nats_url, prefix, fixed=False, calls=calls):
            await client.schedule_new_workflow("checkout", input="o-2", instance_id="o-2")
            await client.wait_for_workflow_completion("o-2", timeout=30)
            [event_id] = positions(await client.get_history("o-2"), "charge")
        async with shop(nats_url, prefix, fixed=True, calls=calls):
            new_id = await client.rerun_workflow_from_event(
                "o-2", event_id, new_instance_id="o-2-fixed"
            )
            rerun = await client.wait_for_workflow_completion("o-2-fixed", timeout=30)
        assert "o-2-fixed" == new_id
        assert '["o-2:reserved","charged expired","o-2:shipped"]' == rerun.serialized_output

    async def test_rerunning_a_completed_run_runs_the_activity_again(
        self, nats_url, prefix, client
    ):
        """Rerunning from the last activity of a completed run runs it again, with an
        idempotency key of the new run (so the side effect really happens again)."""
        calls: list[tuple[str, object]] = []
        async with shop(nats_url, prefix, fixed=True, calls=calls):
            await client.schedule_new_workflow("checkout", input="o-3", instance_id="o-3")
            await client.wait_for_workflow_completion("o-3", timeout=30)
            [event_id] = positions(await client.get_history("o-3"), "ship")
            new_id = await client.rerun_workflow_from_event("o-3", event_id)
            await client.wait_for_workflow_completion(new_id, timeout=30)
        keys = [key for name, key in calls if name == "ship"]
        assert 2 == len(set(keys))

    async def test_what_cannot_be_rerun_is_refused(self, nats_url, prefix, client):
        """A running source, an event that is no activity, an unknown source and the
        source's own id are refused with the reason."""
        calls: list[tuple[str, object]] = []
        async with shop(nats_url, prefix, fixed=True, calls=calls):
            await client.schedule_new_workflow("waits", instance_id="w-1")
            await client.wait_for_workflow_start("w-1", timeout=30)
            with pytest.raises(InstanceAlreadyRunningError, match="finished instance"):
                await client.rerun_workflow_from_event("w-1", 2)
            await client.raise_workflow_event("w-1", "go", data=1)
            await client.wait_for_workflow_completion("w-1", timeout=30)
            with pytest.raises(ValueError, match="event 1 of 'w-1' is workflow_task_started"):
                await client.rerun_workflow_from_event("w-1", 1)
            with pytest.raises(ValueError, match="another id"):
                await client.rerun_workflow_from_event("w-1", 2, new_instance_id="w-1")
            with pytest.raises(InstanceNotFoundError):
                await client.rerun_workflow_from_event("nobody", 2)
