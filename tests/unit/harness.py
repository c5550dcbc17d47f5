"""A serverless stand-in for the runtime: drives one instance through workflow tasks.

Each task is run twice, the way a worker may run it: on a fresh ``WorkflowExecution`` replayed
from the full history (what a worker does after a restart) and on a sticky execution kept in
memory across tasks. Both must append the same events, and the grown history must replay.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec

from engine.core.codec import to_json
from engine.core.events import (
    EventRaised,
    ExecutionCompleted,
    ExecutionStarted,
    FailureDetails,
    HistoryEvent,
    TaskCompleted,
    TaskFailed,
    TaskScheduled,
    TimerCreated,
    TimerFired,
    WorkflowTaskStarted,
    encode,
)
from engine.core.executor import WorkflowExecution
from engine.core.registry import Registry

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
"""The start time of every simulated instance."""

HISTORIES = Path(__file__).parent / "histories"


def registry_of(*workflows: Callable[..., Any], name: str = "wf") -> Registry:
    """A registry with the given workflow registered as ``name`` (activities are by name)."""
    registry = Registry()
    for fn in workflows:
        registry.add_workflow(fn, name=name)
    return registry


class Simulation:
    """One workflow instance advanced task by task, checked for replay consistency."""

    def __init__(
        self,
        registry: Registry,
        input: Any = None,
        *,
        name: str = "wf",
        instance_id: str = "inst-1",
        execution_id: str = "run-1",
        sticky: bool = True,
    ) -> None:
        self.registry = registry
        self.instance_id = instance_id
        self.now = T0
        self.history: list[HistoryEvent] = [
            ExecutionStarted(
                timestamp=T0, name=name, execution_id=execution_id, input=to_json(input)
            )
        ]
        self.sticky: WorkflowExecution | None = (
            WorkflowExecution(registry, instance_id, list(self.history)) if sticky else None
        )

    @classmethod
    def from_history(cls, registry: Registry, history: list[HistoryEvent]) -> Simulation:
        """Continue an instance from a recorded history (no sticky execution)."""
        first = history[0]
        assert isinstance(first, ExecutionStarted)
        sim = cls(registry, name=first.name, execution_id=first.execution_id, sticky=False)
        sim.history = list(history)
        sim.now = max(e.timestamp for e in history)
        return sim

    def step(self, *incoming: HistoryEvent, after: timedelta = timedelta(0)) -> Any:
        """Run one workflow task ``after`` the previous one with the incoming events."""
        self.now += after
        fresh = WorkflowExecution(self.registry, self.instance_id, self.history)
        result = fresh.run_task(list(incoming), self.now)
        if self.sticky is not None:
            sticky_result = self.sticky.run_task(list(incoming), self.now)
            assert _encoded(result.new_events) == _encoded(sticky_result.new_events)
            assert (result.status, bytes(result.output)) == (
                sticky_result.status,
                bytes(sticky_result.output),
            )
        self.history += result.new_events
        replayed = WorkflowExecution(self.registry, self.instance_id, self.history)
        assert result.status in (replayed.status, "SUSPENDED")
        return result

    # -- incoming events, addressed by what the history says was scheduled --

    def completed(self, task_id: int, value: Any = None) -> TaskCompleted:
        """The result of activity ``task_id``."""
        return TaskCompleted(timestamp=self.now, task_id=task_id, result=to_json(value))

    def failed(
        self, task_id: int, type: str = "ValueError", message: str = "boom", **kw: Any
    ) -> TaskFailed:
        """A failed attempt of activity ``task_id``."""
        failure = FailureDetails(type=type, message=message, stack="Traceback ...", **kw)
        return TaskFailed(timestamp=self.now, task_id=task_id, failure=failure)

    def fired(self, timer_id: int) -> TimerFired:
        """The firing of timer ``timer_id`` at the time it was set for."""
        created = next(
            e for e in self.history if isinstance(e, TimerCreated) and e.timer_id == timer_id
        )
        return TimerFired(timestamp=self.now, timer_id=timer_id, fire_at=created.fire_at)

    def raised(self, name: str, data: Any = None, event_id: str = "") -> EventRaised:
        """An external event raised to the instance."""
        return EventRaised(timestamp=self.now, name=name, data=to_json(data), event_id=event_id)


def commands(result: Any) -> list[tuple[Any, ...]]:
    """The commands and completion of a task's new events, as short comparable tuples."""
    out: list[tuple[Any, ...]] = []
    for event in result.new_events:
        if isinstance(event, TaskScheduled):
            out.append(("activity", event.name, event.task_id, _json(event.input)))
        elif isinstance(event, TimerCreated):
            out.append(("timer", event.timer_id, event.fire_at))
        elif isinstance(event, ExecutionCompleted):
            detail = event.failure.type if event.failure else _json(event.result)
            out.append((event.status, detail))
    return out


def output(result: Any) -> Any:
    """The decoded output of a finished task."""
    return _json(result.output)


def task_started(result: Any) -> WorkflowTaskStarted:
    """The WorkflowTaskStarted a task appended."""
    first = result.new_events[0]
    assert isinstance(first, WorkflowTaskStarted)
    return first


def dump_history(history: list[HistoryEvent]) -> bytes:
    """A history as a JSON array, one event per line."""
    return b"[\n" + b",\n".join(encode(e) for e in history) + b"\n]\n"


def load_history(name: str) -> list[HistoryEvent]:
    """A recorded history from tests/unit/histories/."""
    data = (HISTORIES / name).read_bytes()
    return msgspec.json.decode(data, type=list[HistoryEvent])


def _json(raw: msgspec.Raw) -> Any:
    return msgspec.json.decode(bytes(raw))


def _encoded(events: list[HistoryEvent]) -> list[bytes]:
    return [encode(e) for e in events]
