"""Traces of a saga run in-process against a real nats-server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

import nats
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode
from traced_saga import SEEN, build

from engine import WorkflowRuntime, WorkflowStatus
from engine.core.events import ExecutionStarted, WorkflowTaskStarted
from observability import inject_headers


def _trace_of(spans: Sequence[ReadableSpan], instance_id: str) -> list[ReadableSpan]:
    """All finished spans in the trace of ``instance_id``'s instance span."""
    instance = [
        s for s in spans
        if s.name.startswith("workflow ") and s.attributes
        and s.attributes.get("jetloom.instance_id") == instance_id
    ]
    assert 1 == len(instance), [s.name for s in spans]
    trace_id = instance[0].context.trace_id
    return [s for s in spans if s.context.trace_id == trace_id]


def _named(spans: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def _parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def _run_saga(nats_url: str, prefix: str, client: object, *, fail: bool) -> str:
    wfr = WorkflowRuntime(nats_url, prefix=prefix)
    build(wfr)
    async with wfr:
        iid = await client.schedule_new_workflow("saga", input={"item": "w", "fail": fail})
        state = await client.wait_for_workflow_completion(iid, timeout=30)
    expected = WorkflowStatus.FAILED if fail else WorkflowStatus.COMPLETED
    assert expected == state.runtime_status
    return iid


class TestSagaTrace:
    async def test_one_trace_per_instance_with_the_saga_shape(
        self, nats_url, prefix, client, telemetry
    ):
        """A completed saga is one trace: start -> instance -> tasks -> activities."""
        iid = await _run_saga(nats_url, prefix, client, fail=False)
        spans = _trace_of(telemetry.spans.get_finished_spans(), iid)

        [root] = [s for s in spans if s.parent is None]
        assert "start_workflow saga" == root.name
        assert SpanKind.PRODUCER == root.kind
        [instance] = _named(spans, "workflow saga")
        assert root.context.span_id == _parent_id(instance)
        assert StatusCode.ERROR != instance.status.status_code

        tasks = _named(spans, "workflow_task saga")
        history = await client.get_history(iid)
        assert sum(isinstance(e, WorkflowTaskStarted) for e in history) == len(tasks)
        assert {instance.context.span_id} == {_parent_id(t) for t in tasks}
        assert all(SpanKind.CONSUMER == t.kind for t in tasks)
        task_ids = {t.context.span_id for t in tasks}

        # Exactly one span per activity execution: nothing is re-emitted by replays.
        assert [1, 3, 1] == [len(_named(spans, f"activity {n}"))
                             for n in ("reserve", "quote", "register")]
        quotes = _named(spans, "activity quote")
        assert 1 == len({_parent_id(q) for q in quotes}), "scheduled by one workflow task"
        assert all(_parent_id(s) in task_ids for s in spans if s.name.startswith("activity "))
        assert max(q.start_time for q in quotes) < min(q.end_time for q in quotes), "overlap"
        [register] = _named(spans, "activity register")
        assert _parent_id(register) not in {_parent_id(q) for q in quotes}

        # The instance span covers the run, from ExecutionStarted's timestamp.
        started = history[0]
        assert isinstance(started, ExecutionStarted)
        assert abs(instance.start_time - started.timestamp.timestamp() * 1e9) < 1e6
        assert instance.start_time <= min(s.start_time for s in spans if s is not root)
        assert instance.end_time >= max(s.end_time for s in tasks) - 50_000_000

    async def test_task_span_attributes(self, nats_url, prefix, client, telemetry):
        """Workflow task spans say what they replayed, received and decided."""
        iid = await _run_saga(nats_url, prefix, client, fail=False)
        tasks = sorted(
            _named(_trace_of(telemetry.spans.get_finished_spans(), iid), "workflow_task saga"),
            key=lambda s: s.start_time,
        )
        first = tasks[0].attributes
        assert iid == first["jetloom.instance_id"]
        assert "saga" == first["jetloom.workflow.name"]
        assert True is first["jetloom.workflow_task.first"]
        assert 1 == first["jetloom.workflow_task.commands"]  # schedules reserve
        assert "nats" == first["messaging.system"]
        assert "process" == first["messaging.operation.type"]
        last = tasks[-1].attributes
        assert "COMPLETED" == last["jetloom.workflow.status"]
        assert last["jetloom.workflow_task.history_length"] > first[
            "jetloom.workflow_task.history_length"
        ]
        for span in tasks:
            attrs = span.attributes
            assert isinstance(attrs["jetloom.workflow_task.from_cache"], bool)
            replayed = attrs["jetloom.workflow_task.events_replayed"]
            assert replayed in (0, attrs["jetloom.workflow_task.history_length"])
        # Results travel with a publish span linked from the task that consumes them.
        publishes = [s for s in telemetry.spans.get_finished_spans()
                     if s.name == f"publish {prefix}.inbox.*"]
        assert publishes
        linked = {link.context.span_id for t in tasks for link in t.links}
        assert {p.context.span_id for p in publishes} <= linked

    async def test_failure_path_shows_compensation(self, nats_url, prefix, client, telemetry):
        """A failed registration is an error span followed by the compensating activity."""
        iid = await _run_saga(nats_url, prefix, client, fail=True)
        spans = _trace_of(telemetry.spans.get_finished_spans(), iid)
        [register] = _named(spans, "activity register")
        assert StatusCode.ERROR == register.status.status_code
        assert ["exception"] == [e.name for e in register.events]
        assert "RuntimeError" == register.events[0].attributes["exception.type"]
        [restore] = _named(spans, "activity restore")
        assert restore.start_time > register.end_time
        [instance] = _named(spans, "workflow saga")
        assert StatusCode.ERROR == instance.status.status_code
        assert "FAILED" == instance.attributes["jetloom.workflow.status"]


class TestTraceContextPropagation:
    async def test_start_from_a_storefront_span_is_rooted_there(
        self, nats_url, prefix, client, telemetry
    ):
        """A start published with a traceparent continues the publisher's trace."""
        wfr = WorkflowRuntime(nats_url, prefix=prefix)
        build(wfr)
        storefront = trace.get_tracer("storefront")
        async with wfr:
            nc = await nats.connect(nats_url)
            try:
                with storefront.start_as_current_span("storefront checkout") as span:
                    await nc.jetstream().publish(
                        f"{prefix}.start.saga",
                        json.dumps({"instance_id": "order-7", "input": {"fail": False}}).encode(),
                        headers=inject_headers(),
                    )
                    shop = span.get_span_context()
            finally:
                await nc.close()
            await client.wait_for_workflow_completion("order-7", timeout=30)
        spans = _trace_of(telemetry.spans.get_finished_spans(), "order-7")
        assert {shop.trace_id} == {s.context.trace_id for s in spans}
        assert ["storefront checkout"] == [s.name for s in spans if s.parent is None]
        [instance] = _named(spans, "workflow saga")
        assert shop.span_id == _parent_id(instance)
        assert 5 == len([s for s in spans if s.name.startswith("activity ")])

    async def test_child_workflow_joins_the_parent_trace(
        self, nats_url, prefix, client, telemetry
    ):
        """A child workflow's spans hang off the parent's task that started it."""
        wfr = WorkflowRuntime(nats_url, prefix=prefix)
        build(wfr)
        async with wfr:
            iid = await client.schedule_new_workflow("parent_saga", input={"fail": False})
            await client.wait_for_workflow_completion(iid, timeout=30)
        spans = [s for s in telemetry.spans.get_finished_spans()
                 if s.context.trace_id == _named(
                     telemetry.spans.get_finished_spans(), "workflow parent_saga"
                 )[0].context.trace_id]
        [child] = _named(spans, "workflow saga")
        parent_tasks = {s.context.span_id for s in _named(spans, "workflow_task parent_saga")}
        assert _parent_id(child) in parent_tasks
        assert 5 == len([s for s in spans if s.name.startswith("activity ")])


class TestLogContext:
    async def test_activity_code_logs_with_instance_and_span(
        self, nats_url, prefix, client, telemetry
    ):
        """Inside an activity, structlog's context names the instance, workflow and activity."""
        SEEN.clear()
        iid = await _run_saga(nats_url, prefix, client, fail=False)
        [seen] = SEEN
        assert {"instance_id": iid, "workflow": "saga", "activity": "reserve", "attempt": 1} == {
            k: seen[k] for k in ("instance_id", "workflow", "activity", "attempt")
        }
        [reserve] = _named(_trace_of(telemetry.spans.get_finished_spans(), iid),
                           "activity reserve")
        assert reserve.context.span_id == seen["span_id"]


class TestMetrics:
    async def test_saga_metrics(self, nats_url, prefix, client, telemetry):
        """Starts, ends, durations and history lengths are recorded by workflow name."""
        await _run_saga(nats_url, prefix, client, fail=True)
        data = telemetry.metrics.get_metrics_data()
        points: dict[str, list[dict[str, object]]] = {}
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    points.setdefault(metric.name, []).extend(
                        dict(p.attributes or {}) for p in metric.data.data_points
                    )
        for name in ("jetloom.workflow.started", "jetloom.workflow.completed",
                     "jetloom.workflow.failed", "jetloom.workflow.duration",
                     "jetloom.workflow_task.duration", "jetloom.workflow_task.history_length",
                     "jetloom.activity.duration", "jetloom.activity.failures"):
            assert name in points, sorted(points)
        assert {"jetloom.workflow.name": "saga", "jetloom.workflow.status": "FAILED"} in points[
            "jetloom.workflow.completed"
        ]
        assert any(p.get("jetloom.activity.name") == "register"
                   for p in points["jetloom.activity.failures"])

    async def test_backlog_gauges_read_consumer_info(
        self, nats_url, prefix, telemetry, monkeypatch
    ):
        """The backlog gauges report num_pending of the runtime's consumers."""
        import observability._metrics as instrument

        monkeypatch.setattr(instrument, "CONSUMER_POLL_INTERVAL", 0.1)
        wfr = WorkflowRuntime(nats_url, prefix=prefix, task_queues=["slow"])
        build(wfr)
        async with wfr:
            await asyncio.sleep(0.5)
            data = telemetry.metrics.get_metrics_data()
        names = {m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics
                 for m in sm.metrics}
        consumers = {p.attributes["messaging.consumer.group.name"]
                     for p in names["jetloom.consumer.pending"].data.data_points}
        assert {"workflows", "activities-slow"} <= consumers
