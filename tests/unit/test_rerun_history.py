"""The history a rerun starts with (engine.core.rerun, no server)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import msgspec
import pytest
from harness import T0, Simulation, registry_of

from engine import WorkflowContext, when_all
from engine.core.events import ExecutionStarted, TaskScheduled, TimerCreated
from engine.core.executor import WorkflowExecution
from engine.core.rerun import rerun_history

LATER = T0 + timedelta(days=1)


async def three_steps(ctx: WorkflowContext, x: int) -> int:
    a = await ctx.call_activity("step", input=x)
    b = await ctx.call_activity("step", input=a)
    return await ctx.call_activity("step", input=b)


async def fan_out(ctx: WorkflowContext) -> list[Any]:
    return await when_all([ctx.call_activity("quote", input=i) for i in range(3)])


async def child_then_step(ctx: WorkflowContext) -> Any:
    await ctx.call_child_workflow("kid")
    return await ctx.call_activity("step")


def finished(workflow: Any, results: list[Any]) -> list[Any]:
    """The history of a run of ``workflow`` whose n-th task completes with results[n]."""
    sim = Simulation(registry_of(workflow), input=1)
    sim.step()
    for task_id, value in results:
        sim.step(sim.completed(task_id, value))
    return sim.history


class TestRerunHistory:
    def test_history_is_cut_after_the_chosen_activity(self) -> None:
        """The events up to the task_scheduled at the event id, under the new run id."""
        source = finished(three_steps, [(1, 2), (2, 3), (3, 4)])
        position = [i for i, e in enumerate(source) if isinstance(e, TaskScheduled)][1]

        history = rerun_history("src", source, position, execution_id="run-2", now=LATER)

        assert position + 1 == len(history)
        first = history[0]
        assert isinstance(first, ExecutionStarted)
        assert ("run-2", LATER, None) == (first.execution_id, first.timestamp, first.parent)
        last = history[-1]
        assert isinstance(last, TaskScheduled)
        assert (2, "run-2:2", b"2") == (last.task_id, last.task_execution_id, bytes(last.input))

    def test_new_input_replaces_the_activity_input(self) -> None:
        """With a new input, the rerun activity gets it."""
        source = finished(three_steps, [(1, 2), (2, 3), (3, 4)])
        position = next(i for i, e in enumerate(source) if isinstance(e, TaskScheduled))

        history = rerun_history("src", source, position, execution_id="r", now=LATER,
                                new_input=msgspec.Raw(b"10"))

        assert b"10" == bytes(history[-1].input)  # type: ignore[union-attr]

    def test_the_code_replays_it_and_carries_on(self) -> None:
        """The cut history replays with the code, which takes the new input's result on."""
        source = finished(three_steps, [(1, 2), (2, 3), (3, 4)])
        position = [i for i, e in enumerate(source) if isinstance(e, TaskScheduled)][1]
        history = rerun_history("src", source, position, execution_id="r", now=LATER,
                                new_input=msgspec.Raw(b"30"))
        sim = Simulation.from_history(registry_of(three_steps), history)

        result = sim.step(sim.completed(2, 31))

        assert [b"31"] == [bytes(e.input) for e in result.new_events
                           if isinstance(e, TaskScheduled)]

    def test_a_fan_out_keeps_the_whole_task(self) -> None:
        """Rerunning one activity of a fan-out keeps the others of its task too (they are
        issued together and run again)."""
        source = finished(fan_out, [(1, "a"), (2, "b"), (3, "c")])
        position = next(i for i, e in enumerate(source) if isinstance(e, TaskScheduled))

        history = rerun_history("src", source, position, execution_id="r", now=LATER)

        assert [1, 2, 3] == [e.task_id for e in history if isinstance(e, TaskScheduled)]
        WorkflowExecution(registry_of(fan_out), "new", history)  # replays without error

    @pytest.mark.parametrize("position", [0, 1, 99])
    def test_only_an_activity_can_be_rerun_from(self, position: int) -> None:
        """Other events, and ids past the end, are refused naming what is there."""
        source = finished(three_steps, [(1, 2), (2, 3), (3, 4)])
        with pytest.raises(ValueError, match=r"not an activity|no event 99"):
            rerun_history("src", source, position, execution_id="r", now=LATER)

    def test_an_open_child_workflow_is_refused(self) -> None:
        """A child still running at the cut would never report to the new run."""
        sim = Simulation(registry_of(child_then_step))
        sim.step()
        history = list(sim.history)
        history.append(TaskScheduled(timestamp=T0, task_id=2, name="step"))
        with pytest.raises(ValueError, match="child workflow 'inst-1-1'"):
            rerun_history("src", history, len(history) - 1, execution_id="r", now=LATER)

    def test_timers_before_the_cut_are_kept(self) -> None:
        """Events of earlier tasks (a timer here) stay as they were."""
        source = [
            ExecutionStarted(timestamp=T0, name="wf", execution_id="run-1"),
            TimerCreated(timestamp=T0, timer_id=1, fire_at=T0),
            TaskScheduled(timestamp=T0, task_id=2, name="step", task_execution_id="other:2"),
        ]
        history = rerun_history("src", source, 2, execution_id="r", now=LATER)
        assert source[1] == history[1]
        assert "other:2" == history[2].task_execution_id  # type: ignore[union-attr]
