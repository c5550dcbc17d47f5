"""The sticky cache: the current run of recently busy instances, with their live executions."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from engine.core.events import ChildWorkflowScheduled, HistoryEvent
from engine.core.executor import WorkflowExecution


@dataclass
class CachedRun:
    """The current run as this worker last saw it.

    ``execution`` is the live workflow (its coroutine suspended where the last task left it),
    so the next task feeds it only the new events instead of replaying the whole history.
    """

    events: list[HistoryEvent]
    last_seq: int
    execution: WorkflowExecution | None = None
    projected: tuple[Any, ...] | None = None
    """The visible fields of the KV record this worker wrote last."""
    kv_revision: int | None = None
    """That record's KV revision."""
    children: list[str] | None = None
    """Instance ids of the child workflows this run scheduled (None: not counted yet)."""

    def children_after(self, new_events: list[HistoryEvent]) -> list[str]:
        """The run's child workflows once ``new_events`` are appended (without rescanning
        the whole history when they are already counted)."""
        if self.children is None:
            self.children = scheduled_children(self.events)
        return self.children + scheduled_children(new_events)


class HistoryCache:
    """At most ``size`` cached runs, the least recently used dropped first.

    A run that finished leaves the cache at once (its instance takes no more tasks), so a
    worker's memory follows the number of running instances, not of all it has seen.
    """

    def __init__(self, size: int) -> None:
        self._runs: OrderedDict[str, CachedRun] = OrderedDict()
        self._size = size

    def __contains__(self, instance_id: str) -> bool:
        return instance_id in self._runs

    def get(self, instance_id: str) -> CachedRun | None:
        """The cached run of ``instance_id`` (now the most recently used), or None."""
        run = self._runs.get(instance_id)
        if run is not None:
            self._runs.move_to_end(instance_id)
        return run

    def remember(self, instance_id: str, run: CachedRun) -> None:
        """Cache ``run`` as the current run of ``instance_id``."""
        self._runs[instance_id] = run
        self._runs.move_to_end(instance_id)
        while len(self._runs) > self._size:
            self._runs.popitem(last=False)

    def forget(self, instance_id: str) -> None:
        """Drop ``instance_id``'s run (it finished, or history moved on elsewhere)."""
        self._runs.pop(instance_id, None)


def scheduled_children(events: list[HistoryEvent]) -> list[str]:
    """Instance ids of the child workflows scheduled in ``events``."""
    return [e.instance_id for e in events if isinstance(e, ChildWorkflowScheduled)]
