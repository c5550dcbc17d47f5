"""configure() in fresh processes: the global providers can be set only once per process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**clean, "PYTHONPATH": str(ROOT), **env},
        capture_output=True, text=True, timeout=60,
    )


class TestConfigure:
    def test_without_endpoint_nothing_is_installed(self):
        """No OTEL_EXPORTER_OTLP_ENDPOINT: no provider, the API stays no-op, nothing fails."""
        result = _run(
            "import observability as o\n"
            "t = o.configure('svc', json=True)\n"
            "print(t.tracer_provider, t.meter_provider, o.tracing_enabled(), o.metrics_enabled())"
        )
        assert 0 == result.returncode, result.stderr
        assert "None None False False" == result.stdout.strip()

    def test_endpoint_selects_http_protobuf_by_default(self):
        """http/protobuf is the default protocol, and OTEL_SERVICE_NAME names the service."""
        result = _run(
            "import observability as o\n"
            "t = o.configure('svc', json=True)\n"
            "p = t.tracer_provider\n"
            "e = p._active_span_processor._span_processors[0].span_exporter\n"
            "print(type(e).__module__, p.resource.attributes['service.name'])",
            OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9", OTEL_SERVICE_NAME="shop",
        )
        assert 0 == result.returncode, result.stderr
        assert "opentelemetry.exporter.otlp.proto.http.trace_exporter shop" == (
            result.stdout.strip()
        )

    def test_grpc_is_selectable(self):
        """OTEL_EXPORTER_OTLP_PROTOCOL=grpc uses the gRPC exporter."""
        result = _run(
            "import observability as o\n"
            "t = o.configure('svc', json=True)\n"
            "e = t.tracer_provider._active_span_processor._span_processors[0].span_exporter\n"
            "print(type(e).__module__)",
            OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9", OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
        )
        assert 0 == result.returncode, result.stderr
        assert "opentelemetry.exporter.otlp.proto.grpc.trace_exporter" == result.stdout.strip()

    def test_unsupported_protocol_is_a_clear_error(self):
        """An OTLP protocol the process cannot speak fails configure() with what to set."""
        result = _run(
            "import observability as o\no.configure('svc', json=True)",
            OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9",
            OTEL_EXPORTER_OTLP_PROTOCOL="http/json",
        )
        assert 0 != result.returncode
        assert "unsupported OTLP protocol 'http/json'" in result.stderr

    def test_instrumentation_is_inert_unconfigured(self):
        """Without configure(), a workflow task records no span and adds no trace headers."""
        result = _run(
            "from datetime import UTC, datetime\n"
            "from opentelemetry import trace\n"
            "from engine.core.events import ExecutionStarted\n"
            "from observability import WorkflowTaskTrace, dispatch_trace_headers, "
            "tracing_enabled\n"
            "s = ExecutionStarted(timestamp=datetime.now(UTC), name='w', execution_id='e')\n"
            "with WorkflowTaskTrace('i', [], 'workflows') as t:\n"
            "    t.begin(s, [s], from_cache=True)\n"
            "    print(tracing_enabled(), trace.get_current_span().is_recording(),\n"
            "          dispatch_trace_headers(s))"
        )
        assert 0 == result.returncode, result.stderr
        assert "False False {}" == result.stdout.strip()


class TestLogging:
    def test_log_lines_carry_the_current_span(self):
        """JSON log lines written inside a span carry its trace_id and span_id."""
        result = _run(
            "import structlog\n"
            "from opentelemetry.sdk.trace.export import SimpleSpanProcessor\n"
            "from opentelemetry.sdk.trace.export.in_memory_span_exporter import "
            "InMemorySpanExporter\n"
            "from opentelemetry import trace\n"
            "import observability as o\n"
            "o.configure('svc', json=True, span_processor=SimpleSpanProcessor("
            "InMemorySpanExporter()))\n"
            "with trace.get_tracer('t').start_as_current_span('s') as s:\n"
            "    structlog.get_logger().info('hello', k=1)\n"
            "    print(format(s.get_span_context().span_id, '016x'))"
        )
        assert 0 == result.returncode, result.stderr
        import json

        line = json.loads(result.stderr.strip().splitlines()[-1])
        assert result.stdout.strip() == line["span_id"]
        assert 32 == len(line["trace_id"])
        assert "hello" == line["event"]
