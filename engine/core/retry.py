"""Retry policies for activities and child workflows."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta


@dataclass(frozen=True)
class RetryPolicy:
    """When and how often a failed activity or child workflow is tried again.

    The delay before attempt n+1 is ``min(first_retry_interval * backoff_coefficient**(n-1),
    max_retry_interval)``; retrying stops after ``max_number_of_attempts`` attempts or once
    ``retry_timeout`` has passed since the first attempt. Each wait is a durable timer.
    """

    first_retry_interval: timedelta
    """Delay before the first retry."""
    max_number_of_attempts: int
    """Attempts in all, the first included (1 means never retry)."""
    backoff_coefficient: float = 1.0
    """Factor applied to the delay after each attempt (1.0: constant back-off)."""
    max_retry_interval: timedelta | None = None
    """Upper bound of a single delay."""
    retry_timeout: timedelta | None = None
    """No retry starts later than this after the first attempt."""
    non_retryable_error_types: list[str | type] = field(default_factory=list)
    """Exception types (or their names) that fail at once."""

    def __post_init__(self) -> None:
        if self.first_retry_interval <= timedelta(0):
            raise ValueError("RetryPolicy.first_retry_interval must be positive")
        if self.max_number_of_attempts < 1:
            raise ValueError("RetryPolicy.max_number_of_attempts must be at least 1")
        if self.backoff_coefficient < 1.0:
            raise ValueError("RetryPolicy.backoff_coefficient must be at least 1.0")

    def delay_after(self, attempt: int) -> timedelta:
        """The wait after failed attempt ``attempt`` (1-based) before the next one."""
        seconds = self.first_retry_interval.total_seconds() * self.backoff_coefficient ** (
            attempt - 1
        )
        if self.max_retry_interval is not None:
            seconds = min(seconds, self.max_retry_interval.total_seconds())
        return timedelta(seconds=seconds)

    def is_retryable(self, error_type: str) -> bool:
        """False if ``error_type`` (a type name) is listed as non-retryable."""
        names = {t if isinstance(t, str) else t.__name__ for t in self.non_retryable_error_types}
        return error_type not in names
