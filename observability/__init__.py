"""Logging, tracing and metrics for jetloom processes.

``configure(service_name=...)`` once per process; the engine's instrumentation (spans per
workflow task and activity attempt, one trace per instance, metrics, log context) then exports
to the OTLP endpoint in OTEL_EXPORTER_OTLP_ENDPOINT, or costs next to nothing without one.
"""

from observability._instrument import (
    ActivityTrace,
    WorkflowTaskTrace,
    dispatch_trace_headers,
    publish_span,
    tracing_enabled,
)
from observability._logging import add_trace_context, configure_logging
from observability._metrics import watch_consumers
from observability._propagation import extract_context, inject_headers
from observability._setup import Telemetry, configure, metrics_enabled
from observability._trace_ids import derived_trace_id

__all__ = [
    "ActivityTrace",
    "Telemetry",
    "WorkflowTaskTrace",
    "add_trace_context",
    "configure",
    "configure_logging",
    "derived_trace_id",
    "dispatch_trace_headers",
    "extract_context",
    "inject_headers",
    "metrics_enabled",
    "publish_span",
    "tracing_enabled",
    "watch_consumers",
]
