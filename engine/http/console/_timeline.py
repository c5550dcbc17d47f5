"""An instance's history as the console shows it: the event table, the timeline's bars, the
trace id and the related instances.

Pure functions over history events in their wire form (JSON objects tagged by ``type``, as
docs/protocol.md describes them), so they read any instance's history the way a tool in another
language would, and are tested without a server.

Bars come from pairs of events: ``task_scheduled`` -> ``task_completed``/``task_failed`` (one bar
per attempt: every retry is scheduled with a task id of its own), ``timer_created`` ->
``timer_fired``, ``child_workflow_scheduled`` -> the child's completion or failure, and
``execution_suspended`` -> ``execution_resumed``; a raised event is a point. What has not
finished ends at the end of the run, or at ``now`` while the run goes on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from opentelemetry import trace

from observability import derived_trace_id, extract_context

HistoryJson = Mapping[str, Any]
"""One history event in its wire form (``{"type": "task_scheduled", ...}``)."""

_CLOSES_TASK = {"task_completed": "completed", "task_failed": "failed"}
_CLOSES_CHILD = {"child_workflow_completed": "completed", "child_workflow_failed": "failed"}


def parse_time(text: str) -> datetime:
    """An RFC 3339 timestamp of the wire form."""
    return datetime.fromisoformat(text)


def _iso(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class TimelineItem:
    """One bar (or point) on the timeline."""

    id: str
    group: str
    kind: str
    """``activity``, ``timer``, ``child``, ``event``, ``paused`` or ``run``."""
    label: str
    start: datetime
    end: datetime | None
    """None for a point."""
    outcome: str
    """``completed``, ``failed``, ``open`` (not finished when the run ended or now) or
    ``point``."""
    detail: str = ""
    """Tooltip text: attempt, duration, failure."""

    def as_json(self) -> dict[str, Any]:
        """The item as the instance endpoint sends it."""
        return {
            "id": self.id,
            "group": self.group,
            "kind": self.kind,
            "label": self.label,
            "start": _iso(self.start),
            "end": None if self.end is None else _iso(self.end),
            "outcome": self.outcome,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class TimelineGroup:
    """One row of the timeline (an activity name, the timers, a child workflow, events)."""

    id: str
    label: str


@dataclass(frozen=True)
class Timeline:
    """The bars of one run and the rows they sit in, in order of first appearance."""

    groups: list[TimelineGroup]
    items: list[TimelineItem]

    def as_json(self) -> dict[str, Any]:
        """The timeline as the instance endpoint sends it."""
        return {
            "groups": [{"id": g.id, "label": g.label} for g in self.groups],
            "items": [item.as_json() for item in self.items],
        }


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.2f}s"
    return f"{seconds / 60:.1f}min"


@dataclass
class _Open:
    """A scheduling event waiting for the event that closes it."""

    event: HistoryJson
    start: datetime


def _run_end(events: Sequence[HistoryJson], now: datetime) -> tuple[datetime, bool]:
    """When the run ended (and True), or ``now`` (and False) while it goes on."""
    for event in reversed(events):
        if event["type"] == "execution_completed":
            return parse_time(event["timestamp"]), True
    return now, False


class _TimelineBuilder:
    def __init__(self) -> None:
        self.groups: dict[str, TimelineGroup] = {}
        self.items: list[TimelineItem] = []

    def group(self, group_id: str, label: str) -> str:
        self.groups.setdefault(group_id, TimelineGroup(group_id, label))
        return group_id

    def bar(self, item: TimelineItem) -> None:
        if item.end is not None and item.end < item.start:  # clocks of two workers disagree
            item = replace(item, end=item.start)
        self.items.append(item)


def _task_item(
    opened: _Open, end: datetime, outcome: str, closing: HistoryJson | None
) -> TimelineItem:
    event = opened.event
    name = str(event["name"])
    queue = str(event.get("task_queue", "default"))
    attempt = int(event.get("attempt", 1))
    label = name if queue == "default" else f"{name} @{queue}"
    if attempt > 1:
        label += f" (attempt {attempt})"
    detail = [f"activity {name}", f"task queue {queue}", f"attempt {attempt}",
              f"{outcome}, {_duration((end - opened.start).total_seconds())}"]
    if closing is not None and "failure" in closing:
        failure = closing["failure"]
        detail.append(f"{failure.get('type', '')}: {failure.get('message', '')}")
    return TimelineItem(
        id=f"task-{event['task_id']}",
        group=f"activity:{name}",
        kind="activity",
        label=label,
        start=opened.start,
        end=end,
        outcome=outcome,
        detail="\n".join(detail),
    )


def build_timeline(events: Sequence[HistoryJson], now: datetime) -> Timeline:
    """The timeline of one run's events (as ``WorkflowClient.get_history`` returns them)."""
    run_end, finished = _run_end(events, now)
    builder = _TimelineBuilder()
    tasks: dict[int, _Open] = {}
    timers: dict[int, _Open] = {}
    children: dict[int, _Open] = {}
    paused: _Open | None = None
    for event in events:
        kind = event["type"]
        at = parse_time(event["timestamp"])
        if kind == "execution_started":
            builder.items.append(TimelineItem(
                id="run", group="", kind="run", label=str(event.get("name", "")), start=at,
                end=run_end, outcome="completed" if finished else "open",
            ))
        elif kind == "task_scheduled":
            builder.group(f"activity:{event['name']}", str(event["name"]))
            tasks[int(event["task_id"])] = _Open(event, at)
        elif kind in _CLOSES_TASK and int(event["task_id"]) in tasks:
            opened = tasks.pop(int(event["task_id"]))
            builder.bar(_task_item(opened, at, _CLOSES_TASK[kind], event))
        elif kind == "timer_created":
            builder.group("timers", "timers")
            timers[int(event["timer_id"])] = _Open(event, at)
        elif kind == "timer_fired" and int(event["timer_id"]) in timers:
            opened = timers.pop(int(event["timer_id"]))
            builder.bar(_timer_item(opened, at, "completed"))
        elif kind == "child_workflow_scheduled":
            builder.group(f"child:{event['name']}", f"child {event['name']}")
            children[int(event["task_id"])] = _Open(event, at)
        elif kind in _CLOSES_CHILD and int(event["task_id"]) in children:
            opened = children.pop(int(event["task_id"]))
            builder.bar(_child_item(opened, at, _CLOSES_CHILD[kind]))
        elif kind == "event_raised":
            builder.bar(TimelineItem(
                id=f"event-{len(builder.items)}", group=builder.group("events", "events"),
                kind="event", label=str(event.get("name", "")), start=at, end=None,
                outcome="point", detail=f"event {event.get('name', '')}",
            ))
        elif kind == "execution_suspended":
            builder.group("lifecycle", "paused")
            paused = _Open(event, at)
        elif kind == "execution_resumed" and paused is not None:
            builder.bar(_paused_item(paused, at, len(builder.items)))
            paused = None
    for opened in tasks.values():
        builder.bar(_task_item(opened, run_end, "open", None))
    for opened in timers.values():
        builder.bar(_timer_item(opened, run_end, "open"))
    for opened in children.values():
        builder.bar(_child_item(opened, run_end, "open"))
    if paused is not None:
        builder.bar(_paused_item(paused, run_end, len(builder.items)))
    return Timeline(list(builder.groups.values()), builder.items)


def _timer_item(opened: _Open, end: datetime, outcome: str) -> TimelineItem:
    event = opened.event
    wait = (parse_time(event["fire_at"]) - opened.start).total_seconds()
    return TimelineItem(
        id=f"timer-{event['timer_id']}",
        group="timers",
        kind="timer",
        label=f"timer {_duration(max(wait, 0.0))}",
        start=opened.start,
        end=end,
        outcome=outcome,
        detail=f"timer {event['timer_id']}, due {event['fire_at']}, {outcome}",
    )


def _child_item(opened: _Open, end: datetime, outcome: str) -> TimelineItem:
    event = opened.event
    return TimelineItem(
        id=f"child-{event['task_id']}",
        group=f"child:{event['name']}",
        kind="child",
        label=str(event["instance_id"]),
        start=opened.start,
        end=end,
        outcome=outcome,
        detail=f"child workflow {event['name']} ({event['instance_id']}), {outcome}, "
        f"{_duration((end - opened.start).total_seconds())}",
    )


def _paused_item(opened: _Open, end: datetime, position: int) -> TimelineItem:
    reason = str(opened.event.get("reason", ""))
    return TimelineItem(
        id=f"paused-{position}",
        group="lifecycle",
        kind="paused",
        label="paused",
        start=opened.start,
        end=end,
        outcome="open",
        detail=f"paused{': ' + reason if reason else ''}",
    )


_ROW_HIDDEN = frozenset({"type", "timestamp"})


def history_rows(events: Sequence[HistoryJson]) -> list[dict[str, Any]]:
    """The history table: each event's position, type, time, seconds since the previous event,
    the task or timer it belongs to, and its other fields (payloads included)."""
    rows = []
    previous: datetime | None = None
    for index, event in enumerate(events):
        at = parse_time(event["timestamp"])
        task = event.get("task_id")
        if "timer_id" in event:
            task = f"t{event['timer_id']}"
        rows.append({
            "index": index,
            "type": event["type"],
            "timestamp": event["timestamp"],
            "delta_s": None if previous is None else (at - previous).total_seconds(),
            "task": "" if task is None else str(task),
            "fields": {k: v for k, v in event.items() if k not in _ROW_HIDDEN},
        })
        previous = at
    return rows


def trace_id_of(events: Sequence[HistoryJson]) -> str | None:
    """The id (32 hex digits) of the trace that holds the run's spans: the trace of the
    ``traceparent`` its start recorded, else the one derived from its execution id."""
    for event in reversed(events):
        if event["type"] != "execution_started":
            continue
        context = extract_context({"traceparent": str(event.get("traceparent", ""))})
        if context is not None:
            return f"{trace.get_current_span(context).get_span_context().trace_id:032x}"
        return f"{derived_trace_id(str(event['execution_id'])):032x}"
    return None


def related_instances(events: Sequence[HistoryJson]) -> dict[str, Any]:
    """The parent that started this run (or None) and the child workflows it started."""
    parent = None
    children = []
    for event in events:
        if event["type"] == "execution_started":
            started_by = event.get("parent")
            parent = None if not started_by else str(started_by["instance_id"])
        elif event["type"] == "child_workflow_scheduled":
            children.append({"instance_id": event["instance_id"], "name": event["name"]})
    return {"parent": parent, "children": children}
