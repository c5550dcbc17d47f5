"""Deterministic trace and span ids for workflow instances.

A workflow instance's span is emitted when the instance completes, long after its workflow
tasks and activities were traced as its children, possibly by other processes. So every
worker must know that span's id in advance: it is derived from the run's ``execution_id``, and
so is the trace id of a run that no traceparent came with. :class:`PresetIdGenerator` lets the
runtime create the instance span with exactly those ids.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

_preset: ContextVar[tuple[int, int] | None] = ContextVar("jetloom_preset_ids", default=None)


def derived_trace_id(execution_id: str) -> int:
    """The trace id of a run started without a traceparent (128 bits, never 0)."""
    digest = hashlib.blake2b(f"trace:{execution_id}".encode(), digest_size=16).digest()
    return int.from_bytes(digest, "big") or 1


def instance_span_id(execution_id: str) -> int:
    """The span id of a run's instance span (64 bits, never 0)."""
    digest = hashlib.blake2b(f"span:{execution_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") or 1


class PresetIdGenerator(RandomIdGenerator):
    """Random ids, except inside :func:`preset_ids`, which fixes the next span's ids."""

    def generate_span_id(self) -> int:
        """The preset span id, or a random one."""
        preset = _preset.get()
        return preset[1] if preset is not None else super().generate_span_id()

    def generate_trace_id(self) -> int:
        """The preset trace id (used only for a root span), or a random one."""
        preset = _preset.get()
        return preset[0] if preset is not None else super().generate_trace_id()


@contextmanager
def preset_ids(trace_id: int, span_id: int) -> Iterator[None]:
    """Spans started in this block get ``span_id`` (and ``trace_id`` if they are roots)."""
    token = _preset.set((trace_id, span_id))
    try:
        yield
    finally:
        _preset.reset(token)
