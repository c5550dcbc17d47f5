"""The dispatches of a committed workflow task, derived from its events alone (no server)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from brokers import Subjects
from engine.core.events import (
    ChildWorkflowCompleted,
    ChildWorkflowScheduled,
    ExecutionCompleted,
    ExecutionStarted,
    ExecutionTerminated,
    ParentInfo,
    TaskCompleted,
    TaskScheduled,
    TimerCreated,
    TimerFired,
    WorkflowTaskStarted,
)
from engine.worker.dispatch import Dispatcher, running_children, still_open

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
DISPATCH = Dispatcher(Subjects("jl"), "24h")


def started(execution_id: str = "e1", parent: ParentInfo | None = None) -> ExecutionStarted:
    return ExecutionStarted(timestamp=T0, name="wf", execution_id=execution_id, parent=parent)


def test_first_task_dispatches_its_activity_with_a_stable_id() -> None:
    """A run's first task (its start among the new events) sends the activity task to the
    queue's subject, with the message id a re-send would use too."""
    events = [started(), WorkflowTaskStarted(timestamp=T0),
              TaskScheduled(timestamp=T0, task_id=1, name="a", task_queue="q")]
    first = DISPATCH.for_task("i1", [], events, {"traceparent": "00-x"})
    again = DISPATCH.for_task("i1", [], events, {"traceparent": "00-x"})
    assert ["jl.outbox.activity.q"] == [d.subject for d in first]
    assert "e1:1:task" == first[0].headers["Nats-Msg-Id"]
    assert "00-x" == first[0].headers["traceparent"]
    assert [(d.subject, d.data, d.headers) for d in first] == [
        (d.subject, d.data, d.headers) for d in again
    ]


def test_timer_is_a_schedule_targeting_the_instance() -> None:
    fire_at = T0 + timedelta(seconds=5)
    out = DISPATCH.for_task("i1", [started()], [TimerCreated(timestamp=T0, timer_id=2,
                                                             fire_at=fire_at)], {})
    assert ["jl.timer.i1.e1-2"] == [d.subject for d in out]
    assert "@at 2026-12-01T12:00:05.000000Z" == out[0].headers["Nats-Schedule"]
    assert "jl.outbox.workflow.i1" == out[0].headers["Nats-Schedule-Target"]
    assert "Nats-Msg-Id" not in out[0].headers


def test_child_start_and_report_to_parent() -> None:
    child = DISPATCH.for_task("p", [started()], [ChildWorkflowScheduled(
        timestamp=T0, task_id=3, name="kid", instance_id="p-3")], {})
    assert ["jl.outbox.workflow.p-3"] == [d.subject for d in child]
    assert "e1:3:child" == child[0].headers["Nats-Msg-Id"]
    done = DISPATCH.for_task(
        "p-3", [started("c1", ParentInfo("p", "e1", 3))],
        [ExecutionCompleted(timestamp=T0, status="COMPLETED", result=b'"ok"')], {},
    )
    assert ["jl.outbox.workflow.p"] == [d.subject for d in done]
    report = json.loads(done[0].data)
    assert "child_workflow_completed" == report["events"][0]["type"]
    assert 3 == report["events"][0]["task_id"]


def test_continue_as_new_triggers_the_new_run() -> None:
    events = [WorkflowTaskStarted(timestamp=T0),
              ExecutionCompleted(timestamp=T0, status="CONTINUED_AS_NEW"), started("e2")]
    out = DISPATCH.for_task("i1", [started()], events, {})
    assert ["e2:trigger"] == [d.headers["Nats-Msg-Id"] for d in out]


def test_recursive_terminate_stops_running_children_only() -> None:
    history = [started(),
               ChildWorkflowScheduled(timestamp=T0, task_id=1, name="k", instance_id="c1"),
               ChildWorkflowScheduled(timestamp=T0, task_id=2, name="k", instance_id="c2"),
               ChildWorkflowCompleted(timestamp=T0, task_id=1)]
    events = [ExecutionTerminated(timestamp=T0),
              ExecutionCompleted(timestamp=T0, status="TERMINATED")]
    out = DISPATCH.for_task("p", history, events, {})
    assert ["jl.outbox.workflow.c2"] == [d.subject for d in out]
    assert ["c2"] == running_children(history)


def test_still_open_drops_answered_commands() -> None:
    commands = [TaskScheduled(timestamp=T0, task_id=1, name="a"),
                TaskScheduled(timestamp=T0, task_id=2, name="b"),
                TimerCreated(timestamp=T0, timer_id=3, fire_at=T0)]
    history = [started(), *commands, TaskCompleted(timestamp=T0, task_id=1),
               TimerFired(timestamp=T0, timer_id=3, fire_at=T0)]
    assert [commands[1]] == still_open(commands, history)
