"""``configure()``: structlog plus OpenTelemetry tracing and metrics, from OTEL_* variables."""

from __future__ import annotations

import os
from dataclasses import dataclass

import structlog
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, MetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from observability._logging import configure_logging
from observability._trace_ids import PresetIdGenerator

log = structlog.get_logger("jetloom.observability")


@dataclass(frozen=True)
class Telemetry:
    """The providers :func:`configure` installed (None where nothing is exported)."""

    tracer_provider: TracerProvider | None
    """Installed as the global tracer provider, or None."""
    meter_provider: MeterProvider | None
    """Installed as the global meter provider, or None."""

    def force_flush(self, timeout_millis: int = 10_000) -> None:
        """Export everything recorded so far (spans and metrics)."""
        if self.tracer_provider is not None:
            self.tracer_provider.force_flush(timeout_millis)
        if self.meter_provider is not None:
            self.meter_provider.force_flush(timeout_millis)

    def shutdown(self) -> None:
        """Flush and stop exporting (also done at interpreter exit)."""
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()
        if self.meter_provider is not None:
            self.meter_provider.shutdown()


_configured: Telemetry | None = None


def configure(
    service_name: str = "jetloom",
    *,
    json: bool | None = None,
    log_level: str | None = None,
    span_processor: SpanProcessor | None = None,
    metric_reader: MetricReader | None = None,
) -> Telemetry:
    """Configure logging, tracing and metrics for this process (once; later calls reuse it).

    Spans and metrics are exported over OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or the
    per-signal ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` / ``..._METRICS_ENDPOINT``) is set:
    http/protobuf by default (Jaeger listens on 4318), gRPC with
    ``OTEL_EXPORTER_OTLP_PROTOCOL=grpc`` (port 4317; needs the ``jetloom[grpc]`` extra). The
    other standard variables apply as usual (``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``,
    ``OTEL_TRACES_SAMPLER``, ``OTEL_TRACES_EXPORTER=none``, ``OTEL_SDK_DISABLED``...). With no
    endpoint nothing is exported and the instrumentation stays on OpenTelemetry's no-op API.

    Args:
        service_name: ``service.name`` of this process, unless OTEL_SERVICE_NAME is set.
        json: JSON log lines (default: when stderr is not a terminal).
        log_level: lowest log level (default: JETLOOM_LOG_LEVEL, then INFO).
        span_processor: an extra span processor (tests: an in-memory exporter).
        metric_reader: an extra metric reader (tests: an in-memory reader).

    Returns:
        The installed providers, to flush or shut down explicitly.

    Raises:
        RuntimeError: gRPC was asked for but its exporter is not installed, or the protocol
            is not supported.
    """
    global _configured
    configure_logging(json=json, level=log_level or os.environ.get("JETLOOM_LOG_LEVEL", "INFO"))
    if _configured is not None:
        return _configured
    disabled = _env("OTEL_SDK_DISABLED").lower() == "true"
    resource = Resource.create(
        {} if _env("OTEL_SERVICE_NAME") else {"service.name": service_name}
    )

    tracer_provider: TracerProvider | None = None
    processors: list[SpanProcessor] = [span_processor] if span_processor is not None else []
    if not disabled and _exports("TRACES"):
        processors.append(BatchSpanProcessor(_otlp_span_exporter()))
    if processors:
        if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            tracer_provider = TracerProvider(resource=resource, id_generator=PresetIdGenerator())
            for processor in processors:
                tracer_provider.add_span_processor(processor)
            trace.set_tracer_provider(tracer_provider)
        else:
            log.warning("observability.tracer_provider_already_set", kept="existing provider")

    meter_provider: MeterProvider | None = None
    readers: list[MetricReader] = [metric_reader] if metric_reader is not None else []
    if not disabled and _exports("METRICS"):
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        readers.append(PeriodicExportingMetricReader(_otlp_metric_exporter()))
    if readers:
        meter_provider = MeterProvider(resource=resource, metric_readers=readers)
        metrics.set_meter_provider(meter_provider)

    _configured = Telemetry(tracer_provider, meter_provider)
    log.debug(
        "observability.configured",
        tracing=tracer_provider is not None,
        metrics=meter_provider is not None,
        protocol=_protocol("TRACES"),
    )
    return _configured


def metrics_enabled() -> bool:
    """True once :func:`configure` installed a meter provider."""
    return _configured is not None and _configured.meter_provider is not None


def _env(name: str) -> str:
    return os.environ.get(name, "").strip()


def _exports(signal: str) -> bool:
    """True if OTLP export of ``signal`` (TRACES or METRICS) is asked for by the environment."""
    if _env(f"OTEL_{signal}_EXPORTER").lower() == "none":
        return False
    endpoint = _env("OTEL_EXPORTER_OTLP_ENDPOINT")
    return bool(endpoint or _env(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT"))


def _protocol(signal: str) -> str:
    return (
        _env(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL")
        or _env("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).lower()


def _grpc_missing(exc: ImportError) -> RuntimeError:
    return RuntimeError(
        "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs the gRPC exporter, which is not installed "
        f"({exc}); run 'pip install jetloom[grpc]' or use http/protobuf (port 4318)"
    )


def _unsupported(protocol: str) -> RuntimeError:
    return RuntimeError(
        f"unsupported OTLP protocol {protocol!r}; set OTEL_EXPORTER_OTLP_PROTOCOL to "
        "'http/protobuf' (default, port 4318) or 'grpc' (port 4317)"
    )


def _otlp_span_exporter() -> SpanExporter:
    protocol = _protocol("TRACES")
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter as GrpcSpanExporter,
            )
        except ImportError as exc:
            raise _grpc_missing(exc) from None
        return GrpcSpanExporter()
    raise _unsupported(protocol)


def _otlp_metric_exporter() -> MetricExporter:
    protocol = _protocol("METRICS")
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter()
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
                OTLPMetricExporter as GrpcMetricExporter,
            )
        except ImportError as exc:
            raise _grpc_missing(exc) from None
        return GrpcMetricExporter()
    raise _unsupported(protocol)
