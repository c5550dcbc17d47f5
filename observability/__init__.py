"""Logging, tracing and metrics for jetloom processes."""

from observability._logging import configure_logging

__all__ = ["configure_logging"]
