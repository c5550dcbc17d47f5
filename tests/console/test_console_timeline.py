"""Timeline bars, history rows, trace id and related instances from wire-form histories."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from engine.http.console._timeline import (
    build_timeline,
    history_rows,
    related_instances,
    trace_id_of,
)
from observability import derived_trace_id

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(ms: int) -> str:
    return (T0 + timedelta(milliseconds=ms)).isoformat().replace("+00:00", "Z")


def event(kind: str, ms: int, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "timestamp": at(ms), **fields}


def scheduled(ms: int, task_id: int, name: str, **fields: Any) -> dict[str, Any]:
    return event("task_scheduled", ms, task_id=task_id, name=name, **fields)


SAGA = [
    event("execution_started", 0, name="order_processing", execution_id="e1",
          traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    scheduled(5, 1, "reserve", task_queue="inventory"),
    event("task_completed", 20, task_id=1, result={"reserved": True}),
    scheduled(30, 2, "get_quote", task_queue="provider-swift"),
    scheduled(30, 3, "get_quote", task_queue="provider-budget"),
    scheduled(30, 4, "get_quote", task_queue="provider-parcelly"),
    event("timer_created", 30, timer_id=5, fire_at=at(1530)),
    event("task_completed", 90, task_id=3, result={"price": 7.5}),
    event("task_completed", 110, task_id=2, result={"price": 14.9}),
    event("task_failed", 120, task_id=4, failure={"type": "ProviderUnavailableError",
                                                  "message": "down"}),
    scheduled(130, 6, "register_shipment", task_queue="shipping"),
    event("task_failed", 140, task_id=6, failure={"type": "ShipmentRejectedError",
                                                  "message": "refused"}),
    event("timer_created", 141, timer_id=7, fire_at=at(341)),
    event("timer_fired", 345, timer_id=7, fire_at=at(341)),
    scheduled(350, 8, "register_shipment", task_queue="shipping", attempt=2),
    event("task_failed", 360, task_id=8, failure={"type": "ShipmentRejectedError",
                                                  "message": "refused"}),
    scheduled(365, 9, "restore", task_queue="inventory"),
    event("task_completed", 380, task_id=9, result=1),
    event("execution_completed", 390, status="COMPLETED", result={"status": "failed"}),
]


def bars(events: list[dict[str, Any]], now_ms: int = 10_000) -> dict[str, dict[str, Any]]:
    timeline = build_timeline(events, T0 + timedelta(milliseconds=now_ms)).as_json()
    return {item["id"]: item for item in timeline["items"]}


class TestTimeline:
    def test_parallel_quotes_are_overlapping_bars_in_one_row(self):
        """The three quotes scheduled together are three bars of the get_quote row that
        overlap in time, each ending with its own result."""
        items = bars(SAGA)
        quotes = [items[f"task-{n}"] for n in (2, 3, 4)]
        assert {"activity:get_quote"} == {q["group"] for q in quotes}
        assert max(q["start"] for q in quotes) < min(q["end"] for q in quotes)
        assert ["completed", "completed", "failed"] == [q["outcome"] for q in quotes]
        assert "get_quote @provider-swift" == quotes[0]["label"]

    def test_each_retry_is_its_own_attempt_and_compensation_follows_the_failure(self):
        """Shipment attempts are separate bars (the retry labelled with its attempt), the
        back-off is a timer, and the restore bar starts after the last failed attempt."""
        items = bars(SAGA)
        first, second, restore = items["task-6"], items["task-8"], items["task-9"]
        assert ("register_shipment @shipping", "register_shipment @shipping (attempt 2)") == (
            first["label"], second["label"]
        )
        assert ("failed", "failed") == (first["outcome"], second["outcome"])
        assert "ShipmentRejectedError: refused" in second["detail"]
        assert restore["start"] >= second["end"]
        assert (at(141), at(345), "timer 200ms") == (
            items["timer-7"]["start"], items["timer-7"]["end"], items["timer-7"]["label"]
        )

    def test_rows_follow_first_appearance(self):
        """Groups are listed in the order the history first uses them."""
        timeline = build_timeline(SAGA, T0).as_json()
        assert [
            "activity:reserve", "activity:get_quote", "timers", "activity:register_shipment",
            "activity:restore",
        ] == [g["id"] for g in timeline["groups"]]

    def test_unfinished_work_ends_at_the_run_end_or_now(self):
        """What never finished ends where the run ended; in a running instance, at now."""
        finished = bars(SAGA)
        assert ("open", at(390)) == (finished["timer-5"]["outcome"], finished["timer-5"]["end"])
        running = bars(SAGA[:6], now_ms=500)
        assert ("open", at(500), "open") == (
            running["task-4"]["outcome"], running["task-4"]["end"], running["run"]["outcome"]
        )

    def test_children_events_and_pauses(self):
        """A child workflow is a bar to its completion, a raised event is a point, a pause is a
        bar until the resume."""
        items = bars([
            event("execution_started", 0, name="parent", execution_id="e2"),
            event("child_workflow_scheduled", 10, task_id=1, name="refund", instance_id="c-1"),
            event("event_raised", 20, name="approve", data=True),
            event("execution_suspended", 30),
            event("execution_resumed", 60),
            event("child_workflow_completed", 80, task_id=1, result=None),
        ])
        assert ("c-1", "child:refund", at(80)) == (
            items["child-1"]["label"], items["child-1"]["group"], items["child-1"]["end"]
        )
        assert [("approve", None)] == [
            (i["label"], i["end"]) for i in items.values() if i["kind"] == "event"
        ]
        assert [(at(30), at(60))] == [
            (i["start"], i["end"]) for i in items.values() if i["kind"] == "paused"
        ]


class TestHistoryRows:
    def test_rows_carry_position_delta_and_task(self):
        """Each row has the event's position, seconds since the previous one, and its task
        (timers as t<n>); the fields keep the payloads."""
        rows = history_rows(SAGA[:8])
        assert [(0, None, ""), (1, 0.005, "1")] == [
            (r["index"], r["delta_s"], r["task"]) for r in rows[:2]
        ]
        assert ("timer_created", "t5") == (rows[6]["type"], rows[6]["task"])
        assert {"task_id": 3, "result": {"price": 7.5}} == rows[7]["fields"]


class TestTraceAndRelations:
    def test_trace_id_of_the_recorded_traceparent(self):
        """A run started with a traceparent lives in that trace."""
        assert "4bf92f3577b34da6a3ce929d0e0e4736" == trace_id_of(SAGA)

    def test_trace_id_derived_without_a_traceparent(self):
        """Without a traceparent the trace id is the one derived from the execution id."""
        started = event("execution_started", 0, name="w", execution_id="abc")
        assert f"{derived_trace_id('abc'):032x}" == trace_id_of([started])
        assert None is trace_id_of([])

    def test_parent_and_children(self):
        """The parent comes from the run's start, children from their scheduling events."""
        events = [
            event("execution_started", 0, name="w", execution_id="e",
                  parent={"instance_id": "p-1", "execution_id": "pe", "task_id": 3}),
            event("child_workflow_scheduled", 5, task_id=1, name="refund", instance_id="c-1"),
        ]
        assert {"parent": "p-1", "children": [{"instance_id": "c-1", "name": "refund"}]} == (
            related_instances(events)
        )
