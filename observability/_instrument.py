"""The spans, metrics and log context the runtime and client emit.

The engine calls these helpers at a handful of well-delimited points; they hide every
OpenTelemetry detail. When no tracer provider is configured, OpenTelemetry's API hands out
no-op spans and meters, and the helpers skip everything that would cost more than a check
(no attribute is computed, no header injected).

This module knows the history events only by their wire tags (``task_scheduled``...), so it
does not import the engine (which imports it).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextvars import Token
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol

import msgspec
import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanKind, Status, StatusCode

from observability._metrics import Delivery, count_redeliveries, metrics_instruments
from observability._propagation import extract_context, inject_headers, span_context_of
from observability._setup import metrics_enabled
from observability._trace_ids import (
    PresetIdGenerator,
    derived_trace_id,
    instance_span_id,
    preset_ids,
)

_tracer = trace.get_tracer("jetloom")

MESSAGING_SYSTEM = "nats"
_COMMANDS = frozenset(
    {"task_scheduled", "timer_created", "child_workflow_scheduled", "execution_completed"}
)
_SPAN_EVENTS = frozenset(
    {
        "timer_created",
        "timer_fired",
        "event_raised",
        "execution_suspended",
        "execution_resumed",
        "execution_terminated",
    }
)


class RunStart(Protocol):
    """What the instrumentation reads of a run's ``ExecutionStarted`` event."""

    @property
    def timestamp(self) -> datetime: ...
    @property
    def name(self) -> str: ...
    @property
    def execution_id(self) -> str: ...
    @property
    def traceparent(self) -> str: ...
    @property
    def tracestate(self) -> str: ...


class TaskOutcome(Protocol):
    """What the instrumentation reads of a workflow task's result."""

    @property
    def new_events(self) -> list[Any]: ...
    @property
    def status(self) -> str: ...


class ActivityMessage(Protocol):
    """What the instrumentation reads of an activity task."""

    @property
    def instance_id(self) -> str: ...
    @property
    def execution_id(self) -> str: ...
    @property
    def workflow_name(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def task_id(self) -> int: ...
    @property
    def attempt(self) -> int: ...


_PROVIDER_FROM_ENVIRONMENT = "OTEL_PYTHON_TRACER_PROVIDER" in os.environ
"""Whether OpenTelemetry may create a provider from the environment on first use."""
_UNKNOWN = object()


def tracing_enabled() -> bool:
    """True once a tracer provider is installed (by :func:`configure` or by the application)."""
    # Asked for every message: until a provider is installed, OpenTelemetry's getter looks up
    # the environment on each call, so read its global (set at most once) when it is there.
    installed = getattr(trace, "_TRACER_PROVIDER", _UNKNOWN)
    if installed is None and not _PROVIDER_FROM_ENVIRONMENT:
        return False
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def _presets_ids() -> bool:
    return isinstance(getattr(trace.get_tracer_provider(), "id_generator", None), PresetIdGenerator)


def _tag(event: object) -> str:
    tag = type(event).__struct_config__.tag if isinstance(event, msgspec.Struct) else None
    return tag if isinstance(tag, str) else ""


def _ns(when: datetime) -> int:
    return int(when.timestamp() * 1_000_000) * 1000


# ------------------------------------------------------------------------- trace helpers


def _instance_contexts(started: RunStart) -> tuple[Context, trace.SpanContext]:
    """The parent of a run's instance span, and that instance span's (preset) context."""
    starter = span_context_of(started.traceparent, started.tracestate)
    if starter is not None:
        parent = trace.set_span_in_context(NonRecordingSpan(starter), Context())
        instance = trace.SpanContext(
            starter.trace_id,
            instance_span_id(started.execution_id),
            is_remote=True,
            trace_flags=starter.trace_flags,
            trace_state=starter.trace_state,
        )
        return parent, instance
    instance = trace.SpanContext(
        derived_trace_id(started.execution_id),
        instance_span_id(started.execution_id),
        is_remote=True,
        trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
    )
    return Context(), instance


def _run_context(started: RunStart) -> Context:
    """The parent context of everything traced inside a run: its instance span.

    When the tracer provider cannot preset ids (an application's own provider), the instance
    span gets a random id, so tasks hang off the starter's span instead.
    """
    parent, instance = _instance_contexts(started)
    if _presets_ids() or not trace.get_current_span(parent).get_span_context().is_valid:
        return trace.set_span_in_context(NonRecordingSpan(instance), Context())
    return parent


def dispatch_trace_headers(started: RunStart) -> dict[str, str]:
    """Trace headers for the messages a workflow task dispatches (activities, child starts).

    The current span (the workflow task) when tracing, else the run's recorded traceparent.
    """
    if tracing_enabled():
        headers = inject_headers()
        if headers:
            return headers
    return {
        k: v
        for k, v in (("traceparent", started.traceparent), ("tracestate", started.tracestate))
        if v
    }


@contextlib.contextmanager
def publish_span(
    destination: str,
    template: str,
    *,
    name: str | None = None,
    message_count: int = 1,
    attributes: Mapping[str, str | int] | None = None,
) -> Iterator[dict[str, str]]:
    """A PRODUCER span around a NATS publish; yields the headers that carry it on.

    Args:
        destination: the subject published to.
        template: the subject with ids replaced by ``*`` (low cardinality: the span name).
        name: span name (default ``publish <template>``).
        message_count: messages in the batch.
        attributes: extra span attributes.
    """
    if not tracing_enabled():
        yield inject_headers()  # a span the application set by hand still propagates
        return
    attrs: dict[str, str | int] = {
        "messaging.system": MESSAGING_SYSTEM,
        "messaging.operation.type": "publish",
        "messaging.operation.name": "publish",
        "messaging.destination.name": destination,
        "messaging.destination.template": template,
        **(attributes or {}),
    }
    if message_count != 1:
        attrs["messaging.batch.message_count"] = message_count
    with _tracer.start_as_current_span(
        name or f"publish {template}", kind=SpanKind.PRODUCER, attributes=attrs
    ):
        yield inject_headers()


# ----------------------------------------------------------------------- workflow tasks


class WorkflowTaskTrace:
    """Traces, measures and log-binds one workflow task (one replay plus one atomic append).

    Use as a context manager around the task; the runtime reports its progress with
    :meth:`begin`, :meth:`replayed` and :meth:`committed`.
    """

    def __init__(self, instance_id: str, msgs: Sequence[Delivery], consumer: str) -> None:
        self.instance_id = instance_id
        self._msgs = msgs
        self._consumer = consumer
        self._tracing = tracing_enabled()
        self._metrics = metrics_enabled()
        self._span: Span | None = None
        self._attached: Token[Context] | None = None
        self._log_tokens: Mapping[str, Token[Any]] = {}
        self._workflow = ""
        self._first_task = False
        self._started: RunStart | None = None
        self._metrics_attrs: dict[str, str] = {}
        self._t0 = 0.0

    def __enter__(self) -> WorkflowTaskTrace:
        self._t0 = time.perf_counter()
        self._log_tokens = structlog.contextvars.bind_contextvars(instance_id=self.instance_id)
        if self._metrics:
            count_redeliveries(self._msgs, self._consumer)
        return self

    def begin(self, started: RunStart, history: Sequence[object], *, from_cache: bool) -> None:
        """The run is known: open the task's span under the run's instance span.

        Args:
            started: the run's ExecutionStarted.
            history: the run's stored events.
            from_cache: the live execution was reused (no replay of old history).
        """
        self._workflow = started.name
        self._log_tokens = {
            **structlog.contextvars.bind_contextvars(workflow=started.name),
            **self._log_tokens,
        }
        if not (self._tracing or self._metrics):
            return
        self._started = started
        self._first_task = not any(_tag(e) == "workflow_task_started" for e in history)
        if self._metrics:
            self._metrics_attrs = {"jetloom.workflow.name": started.name}
            metrics_instruments.history_length.record(len(history), self._metrics_attrs)
        if not self._tracing:
            return
        links = []
        for msg in self._msgs:
            remote = extract_context(msg.headers)
            if remote is not None:
                links.append(Link(trace.get_current_span(remote).get_span_context()))
        self._span = _tracer.start_span(
            f"workflow_task {started.name}",
            context=_run_context(started),
            kind=SpanKind.CONSUMER,
            links=links,
            attributes={
                "messaging.system": MESSAGING_SYSTEM,
                "messaging.operation.type": "process",
                "messaging.operation.name": "process",
                "messaging.destination.name": self._msgs[0].subject if self._msgs else "",
                "messaging.consumer.group.name": self._consumer,
                "messaging.batch.message_count": len(self._msgs),
                "jetloom.instance_id": self.instance_id,
                "jetloom.execution_id": started.execution_id,
                "jetloom.workflow.name": started.name,
                "jetloom.workflow_task.history_length": len(history),
                "jetloom.workflow_task.events_replayed": 0 if from_cache else len(history),
                "jetloom.workflow_task.from_cache": from_cache,
                "jetloom.workflow_task.first": self._first_task,
            },
        )
        self._attached = otel_context.attach(trace.set_span_in_context(self._span))

    def replayed(self, result: TaskOutcome, *, incoming: int) -> None:
        """The executor ran: record what came in and what the code decided."""
        span = self._span
        if span is None or not span.is_recording():
            return
        commands = 0
        for event in result.new_events:
            tag = _tag(event)
            if tag in _COMMANDS:
                commands += 1
            if tag in _SPAN_EVENTS:
                attrs: dict[str, str | int] = {}
                for key in ("timer_id", "name", "reason"):
                    value = getattr(event, key, None)
                    if isinstance(value, str | int) and value != "":
                        attrs[f"jetloom.{key}"] = value
                fire_at = getattr(event, "fire_at", None)
                if isinstance(fire_at, datetime):
                    attrs["jetloom.fire_at"] = fire_at.isoformat()
                span.add_event(tag, attrs)
        span.set_attributes(
            {
                "jetloom.workflow_task.events_new": incoming,
                "jetloom.workflow_task.commands": commands,
                "jetloom.workflow.status": result.status,
            }
        )

    def committed(self, result: TaskOutcome, instance_id: str) -> None:
        """The task's append committed: count a start or an end, emit the instance span."""
        started = self._started
        if started is None:
            return
        completed = next(
            (e for e in reversed(result.new_events) if _tag(e) == "execution_completed"), None
        )
        if self._metrics:
            if self._first_task:
                metrics_instruments.workflows_started.add(1, self._metrics_attrs)
            if completed is not None:
                status = str(completed.status)
                attrs = {**self._metrics_attrs, "jetloom.workflow.status": status}
                metrics_instruments.workflows_completed.add(1, attrs)
                if status == "FAILED":
                    metrics_instruments.workflows_failed.add(1, self._metrics_attrs)
                metrics_instruments.workflow_duration.record(
                    max(0.0, (completed.timestamp - started.timestamp).total_seconds()), attrs
                )
        if completed is not None and self._tracing:
            _emit_instance_span(instance_id, started, completed)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        span = self._span
        if span is not None:
            if exc is not None:
                if type(exc).__name__ == "AppendConflictError":
                    # Another worker advanced the instance first; this task is retried.
                    span.set_attribute("jetloom.workflow_task.conflict", True)
                else:
                    span.record_exception(exc)
                    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            span.end()
        if self._attached is not None:
            otel_context.detach(self._attached)
        if self._metrics and self._workflow:
            metrics_instruments.task_duration.record(
                time.perf_counter() - self._t0,
                {"jetloom.workflow.name": self._workflow, "error": exc is not None},
            )
        structlog.contextvars.reset_contextvars(**self._log_tokens)


def _emit_instance_span(instance_id: str, started: RunStart, completed: Any) -> None:
    """The span of a whole run, emitted once, by the task whose append ended the run."""
    parent, instance = _instance_contexts(started)
    status = str(completed.status)
    attributes: dict[str, str] = {
        "jetloom.instance_id": instance_id,
        "jetloom.execution_id": started.execution_id,
        "jetloom.workflow.name": started.name,
        "jetloom.workflow.status": status,
    }
    with preset_ids(instance.trace_id, instance.span_id):
        span = _tracer.start_span(
            f"workflow {started.name}",
            context=parent,
            kind=SpanKind.INTERNAL,
            start_time=_ns(started.timestamp),
            attributes=attributes,
        )
    failure = getattr(completed, "failure", None)
    if status == "FAILED":
        message = f"{failure.type}: {failure.message}" if failure is not None else "failed"
        span.set_status(Status(StatusCode.ERROR, message))
        if failure is not None:
            span.add_event(
                "exception",
                {
                    "exception.type": failure.type,
                    "exception.message": failure.message,
                    "exception.stacktrace": failure.stack,
                },
            )
    span.end(end_time=max(_ns(completed.timestamp), _ns(started.timestamp)))


# --------------------------------------------------------------------------- activities


class ActivityTrace:
    """Traces, measures and log-binds one activity attempt.

    The span is a CONSUMER ``process`` span, child of the workflow task that scheduled the
    activity (its context travels in the activity message's headers).
    """

    def __init__(self, task: ActivityMessage, msg: Delivery, consumer: str) -> None:
        self._task = task
        self._msg = msg
        self._consumer = consumer
        self._span: Span | None = None
        self._attached: Token[Context] | None = None
        self._log_tokens: Mapping[str, Token[Any]] = {}
        self._failed = False
        self._metrics = metrics_enabled()
        self._t0 = 0.0

    def __enter__(self) -> ActivityTrace:
        task = self._task
        self._t0 = time.perf_counter()
        self._log_tokens = structlog.contextvars.bind_contextvars(
            instance_id=task.instance_id,
            workflow=task.workflow_name,
            activity=task.name,
            attempt=task.attempt,
        )
        if self._metrics:
            count_redeliveries([self._msg], self._consumer)
        if tracing_enabled():
            parent = extract_context(self._msg.headers) or Context()
            self._span = _tracer.start_span(
                f"activity {task.name}",
                context=parent,
                kind=SpanKind.CONSUMER,
                attributes={
                    "messaging.system": MESSAGING_SYSTEM,
                    "messaging.operation.type": "process",
                    "messaging.operation.name": "process",
                    "messaging.destination.name": self._msg.subject,
                    "messaging.consumer.group.name": self._consumer,
                    "jetloom.instance_id": task.instance_id,
                    "jetloom.execution_id": task.execution_id,
                    "jetloom.workflow.name": task.workflow_name,
                    "jetloom.activity.name": task.name,
                    "jetloom.activity.task_id": task.task_id,
                    "jetloom.activity.attempt": task.attempt,
                },
            )
            self._attached = otel_context.attach(trace.set_span_in_context(self._span))
        return self

    def failed(self, exc: BaseException) -> None:
        """The activity raised: mark the attempt failed (the workflow decides about retries)."""
        self._failed = True
        if self._span is not None:
            self._span.record_exception(exc)
            self._span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        if self._metrics:
            metrics_instruments.activity_failures.add(
                1,
                {"jetloom.activity.name": self._task.name, "error.type": type(exc).__name__},
            )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._span is not None:
            if exc is not None:
                self._span.record_exception(exc)
                self._span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            self._span.end()
        if self._attached is not None:
            otel_context.detach(self._attached)
        if self._metrics:
            outcome = "failed" if self._failed or exc is not None else "completed"
            metrics_instruments.activity_duration.record(
                time.perf_counter() - self._t0,
                {"jetloom.activity.name": self._task.name, "jetloom.activity.outcome": outcome},
            )
        structlog.contextvars.reset_contextvars(**self._log_tokens)
