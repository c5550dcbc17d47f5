"""Two orchestrators racing on one instance, and poison workflow tasks."""

from __future__ import annotations

import asyncio

import pytest
from fault_worker import expected_saga_output
from faultkit import assert_completed_once, wait_all_completed

from engine import WorkflowStatus


class TestRacingOrchestrators:
    """Two orchestrator processes handle results of the same instances at once."""

    @pytest.mark.slow
    async def test_history_stays_linear_under_conflicting_appends(
        self, nats_url, prefix, client, workers, tmp_path
    ):
        """Fan-outs whose results reach both orchestrators complete with the right output and
        a linear history (no duplicate task ids), losers of 10071 conflicts reloading."""
        record = tmp_path / "effects.log"
        await workers.spawn(nats_url, prefix, "acts", "--activities", "--record", str(record))
        orchestrators = [
            await workers.spawn(nats_url, prefix, f"orch{i}", "--workflows", "--log-level", "debug")
            for i in (1, 2)
        ]
        expected = {}
        for i in range(10):
            iid = await client.schedule_new_workflow(
                "saga", input={"base": i, "fan": 20}, instance_id=f"race-{i}"
            )
            expected[iid] = expected_saga_output(i, 20)

        await assert_completed_once(client, expected, faults=1, record=record, timeout=30)
        conflicts = sum(o.count_log("workflow.append_conflict") for o in orchestrators)
        tasks = [o.log().count("event='workflow.task_failed'") for o in orchestrators]
        assert [0, 0] == tasks
        print(f"append conflicts resolved by reloading: {conflicts}")


class TestPoisonWorkflowTask:
    """A workflow task that always fails stalls its instance only."""

    @pytest.mark.slow
    async def test_unregistered_workflow_stalls_without_blocking_others(
        self, nats_url, prefix, client, workers, tmp_path
    ):
        """An instance of a workflow the worker does not host is STALLED with the error and
        retried with growing back-off while other instances complete; a fixed deployment that
        hosts it then completes it."""
        record = tmp_path / "effects.log"
        await workers.spawn(nats_url, prefix, "acts", "--activities", "--record", str(record))
        old = await workers.spawn(nats_url, prefix, "old", "--workflows")
        ghost = await client.schedule_new_workflow("ghost", input=41, instance_id="ghost-1")
        others = [
            await client.schedule_new_workflow("saga", input={"base": i}, instance_id=f"ok-{i}")
            for i in range(5)
        ]

        states = await wait_all_completed(client, others, timeout=30)
        assert [WorkflowStatus.COMPLETED] * 5 == [s.runtime_status for s in states]
        stalled = await client.get_workflow_state(ghost)
        assert WorkflowStatus.STALLED is stalled.runtime_status
        assert "WorkflowNotRegisteredError" == stalled.failure_details.type
        assert "ghost" in stalled.failure_details.message

        async with asyncio.timeout(15):  # back-off 0.5 s, 1 s, 2 s: three failures by ~4 s
            while old.log().count("ghost-1") < 3:
                await asyncio.sleep(0.2)
        await old.stop()
        delays = [
            line.split("retry_in_s=")[1]
            for line in old.log().splitlines()
            if "workflow.task_failed" in line and "ghost-1" in line
        ]
        assert len(delays) >= 2
        assert [float(d) for d in delays] == sorted(float(d) for d in delays)
        await workers.spawn(nats_url, prefix, "fixed", "--workflows", "--with-ghost")
        done = await client.wait_for_workflow_completion(ghost, timeout=40)
        assert (WorkflowStatus.COMPLETED, "42") == (done.runtime_status, done.serialized_output)

    async def test_non_deterministic_code_is_stalled_with_the_error(
        self, nats_url, prefix, client, workers
    ):
        """A workflow awaiting a non-engine awaitable is STALLED with NonDeterminismError while
        an echo started after it completes."""
        await workers.spawn(nats_url, prefix, "orch", "--workflows")
        bad = await client.schedule_new_workflow("nondeterministic", instance_id="nd-1")
        good = await client.schedule_new_workflow("echo", input="fine", instance_id="echo-1")

        done = await client.wait_for_workflow_completion(good, timeout=20)
        stalled = await client.wait_for_workflow_start(bad, timeout=20)
        if stalled.runtime_status is WorkflowStatus.RUNNING:
            stalled = await client.get_workflow_state(bad)

        assert '"fine"' == done.serialized_output
        assert WorkflowStatus.STALLED is stalled.runtime_status
        assert "NonDeterminismError" == stalled.failure_details.type
