"""End to end: a worker process exports its spans over OTLP/HTTP to a receiver on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

HERE = Path(__file__).resolve().parent


class TestOtlpExport:
    def test_worker_spans_reach_an_otlp_http_receiver(self, nats_url, prefix, tmp_path):
        """With OTEL_EXPORTER_OTLP_ENDPOINT set, the saga's spans arrive as one trace."""
        receiver = subprocess.Popen(
            [sys.executable, str(HERE / "otlp_receiver.py"), str(tmp_path)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert receiver.stdout is not None
            port = int(receiver.stdout.readline())
            env = {
                **os.environ,
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
                "OTEL_SERVICE_NAME": "saga-e2e",
                "OTEL_METRIC_EXPORT_INTERVAL": "500",
            }
            env.pop("OTEL_EXPORTER_OTLP_PROTOCOL", None)
            worker = subprocess.run(
                [sys.executable, str(HERE / "traced_worker.py"), nats_url, prefix],
                env=env, capture_output=True, text=True, timeout=60,
            )
            assert 0 == worker.returncode, worker.stderr
            iid = worker.stdout.strip().splitlines()[-1]
        finally:
            receiver.kill()
            receiver.wait()

        spans, services = [], set()
        for body in sorted(tmp_path.glob("traces-*.pb")):
            request = ExportTraceServiceRequest.FromString(body.read_bytes())
            for resource_spans in request.resource_spans:
                for attr in resource_spans.resource.attributes:
                    if attr.key == "service.name":
                        services.add(attr.value.string_value)
                for scope_spans in resource_spans.scope_spans:
                    spans.extend(scope_spans.spans)
        assert {"saga-e2e"} == services
        [instance] = [s for s in spans if s.name == "workflow saga"]
        assert iid in [a.value.string_value for a in instance.attributes
                       if a.key == "jetloom.instance_id"]
        in_trace = [s for s in spans if s.trace_id == instance.trace_id]
        names = sorted({s.name for s in in_trace})
        assert {"start_workflow saga", "workflow saga", "workflow_task saga", "activity reserve",
                "activity quote", "activity register", "activity restore"} <= set(names), names
        # JSON log lines carry the trace of the span they were written in.
        assert '"trace_id"' in worker.stderr
