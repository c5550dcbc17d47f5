"""Retention without a server: the policy, and the purge schedule a finishing task sets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from brokers import Subjects
from engine import RetentionPolicy
from engine.core.events import (
    ExecutionCompleted,
    ExecutionStarted,
    WorkflowTaskStarted,
    decode_work_item,
)
from engine.worker.dispatch import Dispatcher

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


class TestRetentionPolicy:
    def test_a_status_of_its_own_wins_over_any_terminal(self) -> None:
        """Dapr's rule: anyTerminal applies where no status-specific duration is set."""
        policy = RetentionPolicy(completed=DAY, any_terminal=7 * DAY)
        assert [DAY, 7 * DAY, 7 * DAY] == [
            policy.keep_for("COMPLETED"), policy.keep_for("FAILED"), policy.keep_for("TERMINATED")
        ]

    def test_unset_statuses_are_kept_until_purged(self) -> None:
        """No duration: no purge; running statuses never have one."""
        policy = RetentionPolicy(failed=DAY)
        assert [None, DAY, None] == [
            policy.keep_for("COMPLETED"), policy.keep_for("FAILED"), policy.keep_for("RUNNING")
        ]

    def test_negative_durations_are_refused(self) -> None:
        with pytest.raises(ValueError, match="RetentionPolicy\\(failed="):
            RetentionPolicy(failed=-DAY)


def finishing_task(status: str) -> tuple[list[object], list[object]]:
    started = ExecutionStarted(timestamp=T0, name="wf", execution_id="run-1")
    completed = ExecutionCompleted(timestamp=T0 + timedelta(minutes=1), status=status)
    return [started, WorkflowTaskStarted(timestamp=T0)], [
        WorkflowTaskStarted(timestamp=T0), completed
    ]


class TestRetentionSchedule:
    def test_a_finished_run_sets_its_purge(self) -> None:
        """The task that finishes a run sets an @at schedule for its end plus the retention,
        targeting the instance: the purge of that very run."""
        dispatcher = Dispatcher(Subjects("jl"), "24h", RetentionPolicy(completed=DAY))
        before, new = finishing_task("COMPLETED")

        sent = dispatcher.for_task("i1", before, new, {})  # type: ignore[arg-type]

        assert ["jl.timer.i1.retention"] == [d.subject for d in sent]
        assert "@at 2026-12-02T12:01:00.000000Z" == sent[0].headers["Nats-Schedule"]
        assert "jl.outbox.workflow.i1" == sent[0].headers["Nats-Schedule-Target"]
        item = decode_work_item(sent[0].data)
        assert (True, "run-1") == (item.purge, item.execution_id)

    @pytest.mark.parametrize(
        "policy", [None, RetentionPolicy(failed=DAY), RetentionPolicy(completed=DAY)]
    )
    def test_no_purge_without_a_duration_for_the_status(
        self, policy: RetentionPolicy | None
    ) -> None:
        """No policy, or none for this status (FAILED is kept here unless the policy says)."""
        dispatcher = Dispatcher(Subjects("jl"), "24h", policy)
        before, new = finishing_task("FAILED")
        subjects = [d.subject for d in dispatcher.for_task("i1", before, new, {})]  # type: ignore[arg-type]
        expected = ["jl.timer.i1.retention"] if policy == RetentionPolicy(failed=DAY) else []
        assert expected == subjects

    def test_continue_as_new_is_not_an_end(self) -> None:
        """A run that continues as new is not purged: the instance goes on."""
        dispatcher = Dispatcher(Subjects("jl"), "24h", RetentionPolicy(any_terminal=DAY))
        before, new = finishing_task("CONTINUED_AS_NEW")
        assert [] == dispatcher.for_task("i1", before, new, {})  # type: ignore[arg-type]
