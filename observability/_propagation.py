"""W3C trace context (traceparent/tracestate) in NATS message headers."""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_W3C = TraceContextTextMapPropagator()
"""Always W3C, whatever OTEL_PROPAGATORS says: the wire protocol fixes traceparent."""


def inject_headers(context: Context | None = None) -> dict[str, str]:
    """``traceparent`` (and ``tracestate``) of the current span, or of ``context``'s span.

    Empty when there is no valid span (tracing not configured, or no span open).
    """
    carrier: dict[str, str] = {}
    _W3C.inject(carrier, context=context)
    return carrier


def extract_context(headers: Mapping[str, str] | None) -> Context | None:
    """The remote span context carried by ``headers``, or None if they carry none."""
    if not headers or "traceparent" not in headers:
        return None
    context = _W3C.extract({k: headers[k] for k in ("traceparent", "tracestate") if k in headers})
    if not trace.get_current_span(context).get_span_context().is_valid:
        return None
    return context


def span_context_of(traceparent: str, tracestate: str = "") -> trace.SpanContext | None:
    """The span context of a recorded ``traceparent``, or None if it is empty or malformed."""
    if not traceparent:
        return None
    context = extract_context({"traceparent": traceparent, "tracestate": tracestate})
    if context is None:
        return None
    return trace.get_current_span(context).get_span_context()
