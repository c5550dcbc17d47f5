"""Recorded histories replayed against changed workflow code (non-determinism detection).

The JSON files under ``histories/`` were recorded by running the version-1 workflows below
through the ``Simulation`` helper. To re-record them after a deliberate change of the history
format, run ``JETLOOM_RECORD_HISTORIES=1 pytest tests/unit/test_replayer.py``.
"""

# STYLE.md puts the expected value first in asserts, which ruff's SIM300 calls a Yoda condition.

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from harness import (
    HISTORIES,
    Simulation,
    commands,
    dump_history,
    load_history,
    output,
    registry_of,
    task_started,
)

from engine import WorkflowContext, when_all
from engine.core.errors import NonDeterminismError
from engine.core.executor import WorkflowExecution

# ------------------------------------------------------------ version 1 (recorded histories)


async def order_v1(ctx: WorkflowContext, order_id: str) -> str:
    reservation = await ctx.call_activity("reserve", input=order_id)
    await ctx.call_activity("ship", input=reservation)
    return "shipped"


def approval_v1(ctx: WorkflowContext, amount: int):
    yield ctx.call_activity("charge", input=amount)
    try:
        decision = yield ctx.wait_for_external_event("approval", timeout=timedelta(days=1))
    except TimeoutError:
        return "expired"
    return decision


async def review_v1(ctx: WorkflowContext, amount: int) -> Any:
    await ctx.call_activity("charge", input=amount)
    return await ctx.wait_for_external_event("approval")


async def payment_v1(ctx: WorkflowContext) -> str:
    await ctx.call_activity("charge")
    await ctx.call_activity("ship")
    return "v1"


def _record_order() -> list[Any]:
    sim = Simulation(registry_of(order_v1, name="order"), "order-42", name="order")
    sim.step()
    sim.step(sim.completed(1, "res-1"), after=timedelta(seconds=2))
    sim.step(sim.completed(2), after=timedelta(seconds=3))
    return sim.history


def _record_approval() -> list[Any]:
    sim = Simulation(registry_of(approval_v1, name="approval"), 250, name="approval")
    sim.step()
    sim.step(sim.completed(1), after=timedelta(seconds=1))
    return sim.history


def _record_review() -> list[Any]:
    sim = Simulation(registry_of(review_v1, name="review"), 90, name="review")
    sim.step()
    sim.step(sim.completed(1), after=timedelta(seconds=1))
    return sim.history


def _record_payment() -> list[Any]:
    sim = Simulation(registry_of(payment_v1, name="payment"), name="payment")
    sim.step()
    return sim.history


RECORDINGS: dict[str, tuple[Callable[[], list[Any]], Callable[..., Any], str]] = {
    "order_v1_completed.json": (_record_order, order_v1, "order"),
    "approval_v1_waiting.json": (_record_approval, approval_v1, "approval"),
    "payment_v1_running.json": (_record_payment, payment_v1, "payment"),
    "review_v1_waiting.json": (_record_review, review_v1, "review"),
}


def _replay(history_file: str, workflow: Callable[..., Any], name: str) -> WorkflowExecution:
    """Replay a recorded history against ``workflow`` registered under ``name``."""
    return WorkflowExecution(registry_of(workflow, name=name), "inst-1", load_history(history_file))


def _continue(history_file: str, workflow: Callable[..., Any], name: str) -> Simulation:
    """A simulation that continues a recorded instance on ``workflow``."""
    return Simulation.from_history(registry_of(workflow, name=name), load_history(history_file))


class TestRecordedHistories:
    @pytest.mark.parametrize("history_file", sorted(RECORDINGS))
    def test_version_1_records_the_stored_history(self, history_file: str) -> None:
        """Running version 1 again yields exactly the stored JSON (the files are honest)."""
        record, _, _ = RECORDINGS[history_file]
        recorded = dump_history(record())
        if os.environ.get("JETLOOM_RECORD_HISTORIES"):
            HISTORIES.mkdir(exist_ok=True)
            (HISTORIES / history_file).write_bytes(recorded)

        assert recorded == (HISTORIES / history_file).read_bytes()

    @pytest.mark.parametrize("history_file", sorted(RECORDINGS))
    def test_version_1_replays_its_history(self, history_file: str) -> None:
        """The code that wrote a history replays it without error."""
        _, workflow, name = RECORDINGS[history_file]

        execution = _replay(history_file, workflow, name)

        assert len(load_history(history_file)) == execution.history_length


class TestChangedActivities:
    def test_different_activity_names_position_and_both_sides(self) -> None:
        """Calling another activity than history fails at that event, naming both sides."""

        async def order_v2(ctx: WorkflowContext, order_id: str) -> str:
            reservation = await ctx.call_activity("reserve", input=order_id)
            await ctx.call_activity("pack", input=reservation)
            return "shipped"

        with pytest.raises(NonDeterminismError) as caught:
            _replay("order_v1_completed.json", order_v2, "order")

        error = caught.value
        assert (5, "task_scheduled 'ship' #2", "task_scheduled 'pack' #2") == (
            error.position,
            error.expected,
            error.actual,
        )
        assert "history position 5" in str(error)

    def test_extra_activity_at_the_end_is_detected(self) -> None:
        """A call the first run never made is detected even after the recorded completion."""

        async def order_v2(ctx: WorkflowContext, order_id: str) -> str:
            reservation = await ctx.call_activity("reserve", input=order_id)
            await ctx.call_activity("ship", input=reservation)
            await ctx.call_activity("audit")
            return "shipped"

        history = load_history("order_v1_completed.json")
        with pytest.raises(NonDeterminismError) as caught:
            _replay("order_v1_completed.json", order_v2, "order")

        assert (len(history), "no further event", "task_scheduled 'audit' #3") == (
            caught.value.position,
            caught.value.expected,
            caught.value.actual,
        )

    def test_extra_activity_in_the_middle_is_detected(self) -> None:
        """A new call before a recorded one takes its place and is reported against it."""

        def approval_v2(ctx: WorkflowContext, amount: int):
            yield ctx.call_activity("charge", input=amount)
            yield ctx.call_activity("notify")
            decision = yield ctx.wait_for_external_event("approval", timeout=timedelta(days=1))
            return decision

        with pytest.raises(NonDeterminismError) as caught:
            _replay("approval_v1_waiting.json", approval_v2, "approval")

        assert (5, "timer_created #2", "task_scheduled 'notify' #2") == (
            caught.value.position,
            caught.value.expected,
            caught.value.actual,
        )

    def test_missing_activity_is_detected(self) -> None:
        """History holding a call the code no longer makes is non-deterministic."""

        async def order_v2(ctx: WorkflowContext, order_id: str) -> str:
            await ctx.call_activity("reserve", input=order_id)
            return "shipped"

        with pytest.raises(NonDeterminismError) as caught:
            _replay("order_v1_completed.json", order_v2, "order")

        assert (5, "task_scheduled 'ship' #2") == (caught.value.position, caught.value.expected)
        assert "did not issue" in caught.value.actual

    def test_calls_moved_into_an_earlier_task_are_detected(self) -> None:
        """Issuing in parallel what history shows in sequence fails at the next task boundary."""

        async def order_v2(ctx: WorkflowContext, order_id: str) -> str:
            await when_all(
                [ctx.call_activity("reserve", input=order_id), ctx.call_activity("ship")]
            )
            return "shipped"

        with pytest.raises(NonDeterminismError) as caught:
            _replay("order_v1_completed.json", order_v2, "order")

        assert (3, "workflow_task_started", "task_scheduled 'ship' #2") == (
            caught.value.position,
            caught.value.expected,
            caught.value.actual,
        )

    def test_unguarded_new_call_is_detected(self) -> None:
        """A new first call without an is_patched guard breaks a running instance."""

        async def payment_v2(ctx: WorkflowContext) -> str:
            await ctx.call_activity("fraud_check")
            await ctx.call_activity("charge")
            return "v2"

        with pytest.raises(NonDeterminismError) as caught:
            _replay("payment_v1_running.json", payment_v2, "payment")

        assert (2, "task_scheduled 'charge' #1", "task_scheduled 'fraud_check' #1") == (
            caught.value.position,
            caught.value.expected,
            caught.value.actual,
        )


class TestChangedControlFlow:
    def test_foreign_awaitable_during_replay_is_detected(self) -> None:
        """Code that now awaits asyncio.sleep fails the replay with NonDeterminismError."""

        async def order_v2(ctx: WorkflowContext, order_id: str) -> str:
            reservation = await ctx.call_activity("reserve", input=order_id)
            await asyncio.sleep(0)
            await ctx.call_activity("ship", input=reservation)
            return "shipped"

        with pytest.raises(NonDeterminismError) as caught:
            _replay("order_v1_completed.json", order_v2, "order")

        assert "engine task" in caught.value.expected
        assert "awaited NoneType" in caught.value.actual

    def test_ending_earlier_than_history_is_detected(self) -> None:
        """Code that completes where the recorded run kept waiting is non-deterministic."""

        async def review_v2(ctx: WorkflowContext, amount: int) -> str:
            await ctx.call_activity("charge", input=amount)
            return "auto-approved"

        history = load_history("review_v1_waiting.json")
        with pytest.raises(NonDeterminismError) as caught:
            _replay("review_v1_waiting.json", review_v2, "review")

        assert (len(history), "no further event", "ended the workflow (COMPLETED)") == (
            caught.value.position,
            caught.value.expected,
            caught.value.actual,
        )

    def test_failing_during_replay_is_detected(self) -> None:
        """Code that now raises where the recorded run went on stalls rather than fails silently."""

        async def review_v2(ctx: WorkflowContext, amount: int) -> str:
            await ctx.call_activity("charge", input=amount)
            raise RuntimeError("new bug")

        with pytest.raises(NonDeterminismError) as caught:
            _replay("review_v1_waiting.json", review_v2, "review")

        assert "ended the workflow (FAILED: RuntimeError: new bug)" == caught.value.actual

    def test_ending_before_a_recorded_call_is_detected(self) -> None:
        """Code that returns where the recorded run went on to set a timer fails at that timer."""

        def approval_v2(ctx: WorkflowContext, amount: int):
            yield ctx.call_activity("charge", input=amount)
            return "auto-approved"

        with pytest.raises(NonDeterminismError) as caught:
            _replay("approval_v1_waiting.json", approval_v2, "approval")

        assert (5, "timer_created #2") == (caught.value.position, caught.value.expected)

    def test_compatible_change_replays_and_continues(self) -> None:
        """A change that issues the same commands (here: logging) replays and finishes."""

        def approval_v2(ctx: WorkflowContext, amount: int):
            ctx.logger.info("approval.charging", amount=amount)
            yield ctx.call_activity("charge", input=amount)
            try:
                decision = yield ctx.wait_for_external_event("approval", timeout=timedelta(days=1))
            except TimeoutError:
                return "expired"
            return decision

        sim = _continue("approval_v1_waiting.json", approval_v2, "approval")

        result = sim.step(sim.fired(2), after=timedelta(days=1))

        assert ("COMPLETED", "expired") == (result.status, output(result))


class TestPatchedReplay:
    def test_old_history_takes_the_unpatched_branch_to_the_end(self) -> None:
        """is_patched is False for a history recorded before the patch, in every later task."""

        async def payment_v2(ctx: WorkflowContext) -> str:
            if ctx.is_patched("fraud-check"):
                await ctx.call_activity("fraud_check")
            await ctx.call_activity("charge")
            await ctx.call_activity("ship")
            return "patched" if ctx.is_patched("fraud-check") else "unpatched"

        sim = _continue("payment_v1_running.json", payment_v2, "payment")

        shipping = sim.step(sim.completed(1), after=timedelta(seconds=1))
        result = sim.step(sim.completed(2), after=timedelta(seconds=1))

        assert [("activity", "ship", 2, None)] == commands(shipping)
        assert [(), ()] == [task_started(shipping).patches, task_started(result).patches]
        assert ("COMPLETED", "unpatched") == (result.status, output(result))

    def test_new_history_keeps_the_patch_on_replay(self) -> None:
        """A run that recorded the patch replays with it and keeps it in later tasks."""

        async def payment_v2(ctx: WorkflowContext) -> str:
            if ctx.is_patched("fraud-check"):
                await ctx.call_activity("fraud_check")
            await ctx.call_activity("charge")
            return "patched" if ctx.is_patched("fraud-check") else "unpatched"

        sim = Simulation(registry_of(payment_v2, name="payment"), name="payment", sticky=False)
        first = sim.step()
        sim.step(sim.completed(1))
        result = sim.step(sim.completed(2))

        assert ("fraud-check",) == task_started(first).patches
        assert "patched" == output(result)
