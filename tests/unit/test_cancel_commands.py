"""Cancelling tasks in workflow code: what the executor records and ignores (no server).

Every scenario runs through ``Simulation``, so each task is checked fresh and sticky, and the
grown history must replay (a cancellation is a command, matched on replay like the others).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from harness import Simulation, registry_of

from brokers import Subjects
from engine import RetryPolicy, TaskCancelledError, WorkflowContext, when_all, when_any
from engine.core.events import (
    CancelRequest,
    ExecutionTerminated,
    TaskCancelRequested,
    TaskScheduled,
    decode_cancel_request,
)
from engine.core.executor import WorkflowExecution
from engine.worker.dispatch import Dispatcher, still_open

DISPATCH = Dispatcher(Subjects("jl"), "24h")


def cancel_requests(result: Any) -> list[int]:
    """Task ids of the cancellations a task appended."""
    return [e.task_id for e in result.new_events if isinstance(e, TaskCancelRequested)]


def scheduled(result: Any) -> list[int]:
    return [e.task_id for e in result.new_events if isinstance(e, TaskScheduled)]


async def race_losers_cancelled(ctx: WorkflowContext) -> str:
    fast = ctx.call_activity("fast")
    slow = ctx.call_activity("slow")
    winner = await when_any([fast, slow], cancel_losers=True)
    return "fast" if winner is fast else "slow"


def race_losers_cancelled_gen(ctx: WorkflowContext):
    fast = ctx.call_activity("fast")
    slow = ctx.call_activity("slow")
    winner = yield when_any([fast, slow], cancel_losers=True)
    return "fast" if winner is fast else "slow"


async def race_losers_kept(ctx: WorkflowContext) -> str:
    fast = ctx.call_activity("fast")
    slow = ctx.call_activity("slow")
    winner = await when_any([fast, slow])
    return "fast" if winner is fast else "slow"


async def cancel_then_await(ctx: WorkflowContext) -> str:
    task = ctx.call_activity("long")
    await ctx.create_timer(timedelta(minutes=1))
    task.cancel()
    try:
        await task
    except TaskCancelledError as error:
        return f"stopped: {error}"
    return "finished"


async def activity_or_deadline(ctx: WorkflowContext) -> str:
    work = ctx.call_activity("work")
    deadline = ctx.create_timer(timedelta(minutes=5))
    winner = await when_any([work, deadline], cancel_losers=True)
    return "done" if winner is work else "too slow"


async def cancel_during_backoff(ctx: WorkflowContext) -> str:
    policy = RetryPolicy(first_retry_interval=timedelta(minutes=1), max_number_of_attempts=3)
    task = ctx.call_activity("flaky", retry_policy=policy)
    await ctx.wait_for_external_event("stop")
    task.cancel()
    return "stopped"


async def cancel_at_once(ctx: WorkflowContext) -> str:
    task = ctx.call_activity("never")
    task.cancel()
    return "cancelled before it was sent"


async def waits_for_an_event(ctx: WorkflowContext) -> str:
    return str(await ctx.wait_for_external_event("go"))


async def cancel_all_of(ctx: WorkflowContext) -> str:
    tasks = when_all([ctx.call_activity("a"), ctx.call_activity("b")])
    await ctx.create_timer(timedelta(seconds=1))
    tasks.cancel()
    try:
        await tasks
    except TaskCancelledError:
        return "both cancelled"
    return "finished"


class TestCancelLosers:
    @pytest.mark.parametrize(
        "workflow",
        [pytest.param(race_losers_cancelled, id="async"),
         pytest.param(race_losers_cancelled_gen, id="generator")],
    )
    def test_the_loser_is_cancelled_when_the_winner_finishes(self, workflow: Any) -> None:
        """with cancel_losers, the activity that lost gets a task_cancel_requested."""
        sim = Simulation(registry_of(workflow))
        assert [1, 2] == scheduled(sim.step())

        result = sim.step(sim.completed(1, "ok"))

        assert [2] == cancel_requests(result)
        assert "COMPLETED" == result.status

    def test_without_cancel_losers_the_loser_is_left_alone(self) -> None:
        """Plain when_any cancels nothing (Dapr's when_any)."""
        sim = Simulation(registry_of(race_losers_kept))
        sim.step()

        assert [] == cancel_requests(sim.step(sim.completed(1, "ok")))

    def test_a_late_result_of_the_loser_is_dropped(self) -> None:
        """The cancelled activity's result, if it still comes, is not accepted."""
        sim = Simulation(registry_of(race_losers_cancelled))
        sim.step()
        sim.step(sim.completed(1, "ok"))

        late = WorkflowExecution(sim.registry, sim.instance_id, sim.history)

        assert not late.accepts(sim.completed(2, "late"))

    def test_a_timer_that_lost_needs_no_command(self) -> None:
        """A timer loser just stops being waited for: nothing is recorded for it."""
        sim = Simulation(registry_of(activity_or_deadline))
        sim.step()

        result = sim.step(sim.completed(1, "ok"))

        assert [] == cancel_requests(result)
        assert "COMPLETED" == result.status

    def test_an_activity_that_lost_to_the_timer_is_cancelled(self) -> None:
        """The deadline pattern: the timer wins, the activity is told to stop."""
        sim = Simulation(registry_of(activity_or_deadline))
        sim.step()

        result = sim.step(sim.fired(2), after=timedelta(minutes=5))

        assert [1] == cancel_requests(result)


class TestTaskCancel:
    def test_awaiting_a_cancelled_activity_raises(self) -> None:
        """Task.cancel() records the request and the await raises TaskCancelledError."""
        sim = Simulation(registry_of(cancel_then_await))
        sim.step()

        result = sim.step(sim.fired(2), after=timedelta(minutes=1))

        assert [1] == cancel_requests(result)
        assert "COMPLETED" == result.status
        assert b'"stopped: activity \'long\' was cancelled"' == bytes(result.output)

    def test_cancel_during_a_retry_back_off_ends_the_retries(self) -> None:
        """Cancelled while waiting to retry: no request (nothing runs), no further attempt."""
        sim = Simulation(registry_of(cancel_during_backoff))
        sim.step()
        sim.step(sim.failed(1))

        result = sim.step(sim.raised("stop"))
        after_timer = sim.step(sim.fired(2), after=timedelta(minutes=1))

        assert [] == cancel_requests(result)
        assert "COMPLETED" == result.status
        assert [] == scheduled(after_timer)

    def test_cancel_in_the_same_task_records_both(self) -> None:
        """An activity cancelled right after the call is scheduled and cancelled in one
        task (the dispatcher then sends nothing for it)."""
        sim = Simulation(registry_of(cancel_at_once))

        result = sim.step()

        assert [1] == scheduled(result)
        assert [1] == cancel_requests(result)

    def test_cancelling_when_all_cancels_each_activity(self) -> None:
        """A composite task passes the cancellation to its unfinished tasks."""
        sim = Simulation(registry_of(cancel_all_of))
        sim.step()

        result = sim.step(sim.fired(3), after=timedelta(seconds=1))

        assert [1, 2] == cancel_requests(result)
        assert b'"both cancelled"' == bytes(result.output)

    def test_cancelling_a_finished_task_does_nothing(self) -> None:
        """cancel() after the result came records nothing."""
        sim = Simulation(registry_of(cancel_then_await))
        sim.step()
        sim.step(sim.completed(1, "done early"))

        result = sim.step(sim.fired(2), after=timedelta(minutes=1))

        assert [] == cancel_requests(result)
        assert b'"finished"' == bytes(result.output)


# ------------------------------------------------------------------ what the worker sends


class TestCancelDispatch:
    """The cancel requests a committed task sends (engine.worker.dispatch, no server)."""

    def test_cancelled_activities_are_named_in_one_request(self) -> None:
        """A task that cancels activities sends one request naming every activity the run
        cancelled so far, with a message id that a re-send repeats."""
        sim = Simulation(registry_of(cancel_all_of))
        sim.step()
        before = list(sim.history)
        result = sim.step(sim.fired(3), after=timedelta(seconds=1))

        sent = DISPATCH.for_task("inst-1", before, result.new_events, {})

        assert ["jl.cancel.inst-1"] == [d.subject for d in sent]
        assert CancelRequest("inst-1", "run-1", [1, 2]) == decode_cancel_request(sent[0].data)
        assert "run-1:cancel:2" == sent[0].headers["Nats-Msg-Id"]

    def test_an_activity_cancelled_at_once_is_never_sent(self) -> None:
        """Scheduled and cancelled in one task: no activity task, no request."""
        sim = Simulation(registry_of(cancel_at_once))
        result = sim.step()

        sent = DISPATCH.for_task("inst-1", [], [sim.history[0], *result.new_events], {})

        assert [] == sent

    def test_terminating_a_run_stops_its_open_activities(self) -> None:
        """A terminated run with activities still open asks for all of them to stop."""
        sim = Simulation(registry_of(race_losers_kept))
        sim.step()
        before = list(sim.history)
        result = sim.step(ExecutionTerminated(timestamp=sim.now))

        sent = DISPATCH.for_task("inst-1", before, result.new_events, {})

        assert ["jl.cancel.inst-1"] == [d.subject for d in sent]
        assert CancelRequest("inst-1", "run-1", []) == decode_cancel_request(sent[0].data)
        assert "run-1:cancel:all" == sent[0].headers["Nats-Msg-Id"]

    def test_terminating_a_run_without_open_activities_sends_no_request(self) -> None:
        """Nothing runs, nothing to stop: a run waiting for an event is just terminated."""
        sim = Simulation(registry_of(waits_for_an_event))
        sim.step()
        before = list(sim.history)
        result = sim.step(ExecutionTerminated(timestamp=sim.now))

        assert [] == DISPATCH.for_task("inst-1", before, result.new_events, {})

    def test_a_cancelled_activity_is_not_sent_again(self) -> None:
        """Re-sending a task's dispatches after a crash skips activities cancelled since."""
        sim = Simulation(registry_of(race_losers_cancelled))
        first = sim.step()
        sim.step(sim.completed(1, "ok"))

        assert [] == still_open(
            [e for e in first.new_events if isinstance(e, TaskScheduled) and e.task_id == 2],
            sim.history,
        )

    def test_the_request_covers_its_tasks_or_the_whole_run(self) -> None:
        """A request names tasks of one run; an empty list covers every activity of it."""
        named = CancelRequest("i", "run-1", [2])
        whole = CancelRequest("i", "run-1")

        assert [False, True, False] == [
            named.covers("run-1", 1), named.covers("run-1", 2), named.covers("run-2", 2)
        ]
        assert [True, False] == [whole.covers("run-1", 7), whole.covers("run-2", 7)]
