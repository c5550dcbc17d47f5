"""One in-memory tracer and meter provider for the whole session.

OpenTelemetry's global providers can be set only once per process, so a session fixture
installs them through ``observability.configure`` and each test clears the exporter.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import observability


class Telemetry:
    """What the tests read: finished spans and collected metrics."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.metrics = InMemoryMetricReader()


@pytest.fixture(scope="session")
def session_telemetry() -> Telemetry:
    """Install the in-memory providers once (no OTLP export, whatever the environment says)."""
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                 "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"):
        os.environ.pop(name, None)
    telemetry = Telemetry()
    observability.configure(
        "jetloom-tests",
        json=True,
        span_processor=SimpleSpanProcessor(telemetry.spans),
        metric_reader=telemetry.metrics,
    )
    return telemetry


@pytest.fixture
def telemetry(session_telemetry: Telemetry) -> Iterator[Telemetry]:
    """The session's telemetry, with no spans left from earlier tests."""
    session_telemetry.spans.clear()
    yield session_telemetry
    session_telemetry.spans.clear()
