"""RetryPolicy: the back-off arithmetic and its validation."""

# STYLE.md puts the expected value first in asserts, which ruff's SIM300 calls a Yoda condition.

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from engine import RetryPolicy


class TestRetryPolicy:
    def test_constant_delay_by_default(self) -> None:
        """Without a coefficient every delay is the first interval."""
        policy = RetryPolicy(first_retry_interval=timedelta(seconds=5), max_number_of_attempts=4)

        assert [5.0, 5.0, 5.0] == [policy.delay_after(n).total_seconds() for n in (1, 2, 3)]

    def test_exponential_delay_capped_by_max_retry_interval(self) -> None:
        """Delay n is first * coefficient**(n-1), never above max_retry_interval."""
        policy = RetryPolicy(
            first_retry_interval=timedelta(seconds=1),
            max_number_of_attempts=10,
            backoff_coefficient=2.0,
            max_retry_interval=timedelta(seconds=5),
        )

        assert [1.0, 2.0, 4.0, 5.0, 5.0] == [
            policy.delay_after(n).total_seconds() for n in range(1, 6)
        ]

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"first_retry_interval": timedelta(0)}, "first_retry_interval"),
            ({"max_number_of_attempts": 0}, "max_number_of_attempts"),
            ({"backoff_coefficient": 0.5}, "backoff_coefficient"),
        ],
    )
    def test_invalid_values_are_refused(self, kwargs: dict[str, object], message: str) -> None:
        """Nonsensical settings raise ValueError naming the setting."""
        settings: dict[str, object] = {
            "first_retry_interval": timedelta(seconds=1),
            "max_number_of_attempts": 3,
            **kwargs,
        }

        with pytest.raises(ValueError, match=message):
            RetryPolicy(**settings)  # type: ignore[arg-type]

    def test_non_retryable_types_match_by_type_or_name(self) -> None:
        """Types listed as classes or as names are both recognised."""
        policy = RetryPolicy(
            timedelta(seconds=1), 3, non_retryable_error_types=[KeyError, "PaymentDeclined"]
        )

        assert [False, False, True] == [
            policy.is_retryable(name) for name in ("KeyError", "PaymentDeclined", "TimeoutError")
        ]

    def test_is_immutable(self) -> None:
        """A policy is a frozen value object."""
        policy = RetryPolicy(timedelta(seconds=1), 3)

        with pytest.raises(dataclasses.FrozenInstanceError):
            policy.max_number_of_attempts = 5  # type: ignore[misc]
