"""Workers SIGKILLed at every crash point of engine/worker/faults.py; another worker recovers.

Activities are at-least-once: an activity worker that dies after running an activity but before
its result is acknowledged makes the task run again after its lease. The idempotency key of its
side effects is ``ActivityContext.task_execution_id``; the workflow's history still holds exactly
one result per task.
"""

from __future__ import annotations

import pytest
from fault_worker import expected_saga_output
from faultkit import (
    assert_completed_once,
    effect_counts,
    effects,
    set_workflow_lease,
    wait_all_completed,
    wait_consumer_drained,
)

SAGAS = 5


async def _start_sagas(client, n: int = SAGAS, timer_s: float = 0.0) -> dict[str, int]:
    """Start ``n`` sagas; instance id -> expected output."""
    expected = {}
    for i in range(n):
        iid = await client.schedule_new_workflow(
            "saga", input={"base": 10 * i, "fan": 2, "timer_s": timer_s}, instance_id=f"saga-{i}"
        )
        expected[iid] = expected_saga_output(10 * i)
    return expected


class TestOrchestratorCrash:
    """An orchestrator killed inside a workflow task; a second one finishes every instance."""

    @pytest.mark.slow
    @pytest.mark.parametrize("crash_at", ["after_append", "before_ack"])
    async def test_second_orchestrator_completes_each_instance_once(
        self, nats_url, prefix, client, workers, tmp_path, crash_at
    ):
        """After a SIGKILL at the crash point, every saga completes once with the right output,
        each effect applied once and no history with a gap or a duplicate."""
        record = tmp_path / "effects.log"
        await workers.spawn(nats_url, prefix, "acts", "--activities", "--record", str(record))
        doomed = await workers.spawn(nats_url, prefix, "orch1", "--workflows", crash_at=crash_at)
        await set_workflow_lease(nats_url, prefix, 2)

        expected = await _start_sagas(client)
        assert -9 == await doomed.wait_exit(timeout=30)

        await workers.spawn(nats_url, prefix, "orch2", "--workflows")
        await set_workflow_lease(nats_url, prefix, 2)
        await assert_completed_once(client, expected, faults=1, record=record)

        counts = effect_counts(record)
        assert 3 * SAGAS == len(counts)
        assert {1} == set(counts.values()), "an activity effect was applied twice"


class TestActivityCrash:
    """An activity worker killed around an activity's result; the task is redelivered."""

    @pytest.mark.slow
    @pytest.mark.parametrize("crash_at", ["activity_before_result", "activity_before_ack"])
    async def test_activity_runs_again_but_history_has_one_result(
        self, nats_url, prefix, client, workers, tmp_path, crash_at
    ):
        """The killed worker's activity runs again on another worker after the 2 s lease (its
        effect shows twice under one task_execution_id), yet each history has one result per
        task and every saga completes with the right output."""
        record = tmp_path / "effects.log"
        await workers.spawn(nats_url, prefix, "orch", "--workflows")
        doomed = await workers.spawn(
            nats_url, prefix, "actsA", "--activities", "--record", str(record),
            "--lease", "2", "--max-activities", "1", crash_at=crash_at,
        )
        expected = await _start_sagas(client)
        assert -9 == await doomed.wait_exit(timeout=30)

        await workers.spawn(
            nats_url, prefix, "actsB", "--activities", "--record", str(record), "--lease", "2"
        )
        # The workflow may finish before the lease of the abandoned task runs out.
        await wait_consumer_drained(nats_url, prefix, "activities-default")
        await assert_completed_once(client, expected, faults=1, record=record, reruns=1)

        counts = effect_counts(record)
        assert 3 * SAGAS == len(counts)
        twice = [key for key, n in counts.items() if n > 1]
        assert 1 == len(twice), f"exactly the crashed activity runs again: {counts}"
        assert [2] == [counts[k] for k in twice]
        runners = [w for w, iid, key in effects(record) if (iid, key) == twice[0]]
        assert ["actsA", "actsB"] == runners


class TestActivityLease:
    """A live activity keeps its lease however long it runs."""

    async def test_long_activity_outlives_its_lease_without_redelivery(
        self, nats_url, prefix, client, workers, tmp_path
    ):
        """Activities that run 4x their 1 s lease on two competing workers, the runtime
        heartbeating for them, complete once each: no other worker is handed the task."""
        record = tmp_path / "effects.log"
        await workers.spawn(nats_url, prefix, "orch", "--workflows")
        for name in ("actsA", "actsB"):
            await workers.spawn(
                nats_url, prefix, name, "--activities", "--record", str(record), "--lease", "1"
            )
        ids = [
            await client.schedule_new_workflow("held", input=4.0, instance_id=f"held-{i}")
            for i in range(4)
        ]
        await wait_all_completed(client, ids, timeout=30)
        runners = {iid: worker for worker, iid, _ in effects(record)}
        await assert_completed_once(client, runners, faults=0, record=record)
        assert ids == sorted(runners)
        assert 4 == len(effects(record)), "an activity was handed to a second worker"
