"""Tasks as a Dapr workflow sees them, and ``RetryPolicy``.

A Dapr workflow yields the engine's own tasks, each derived once (``Task.derive``) so that its
result is the value Dapr would have decoded (``SimpleNamespace`` for marked objects) and its
failure is Dapr's ``TaskFailedError``. ``when_all``/``when_any`` combine them like any others.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, TypeVar

import engine
from engine.dapr._errors import NonRetryableError, TaskFailedError
from engine.dapr._payload import revive

T = TypeVar("T")

_SMALLEST_INTERVAL = timedelta(milliseconds=1)
"""Dapr accepts a first retry interval of 0; the engine needs a positive one."""


def dapr_task(
    inner: engine.Task[Any],
    *,
    describe_failure: Callable[[BaseException], BaseException] | None = None,
    on_done: Callable[[Any, BaseException | None], None] | None = None,
) -> engine.Task[Any]:
    """One engine task as Dapr's: revived result, Dapr's failure and messages.

    ``on_done`` (if given) is told the result, or the failure, once the task is complete: the
    history propagation log records results with it.
    """

    def result(value: Any) -> Any:
        revived = revive(value)
        if on_done is not None:
            on_done(revived, None)
        return revived

    def failure(error: BaseException) -> BaseException:
        described = error if describe_failure is None else describe_failure(error)
        if on_done is not None:
            on_done(None, described)
        return described

    return inner.derive(result=result, failure=failure)


def task_failure(kind: str, name: str) -> Callable[[BaseException], BaseException]:
    """Turns an engine failure of an activity or child workflow into Dapr's error."""

    def describe(error: BaseException) -> BaseException:
        if isinstance(error, TaskFailedError) or not isinstance(error, engine.TaskFailedError):
            return error
        details = error.failure_details
        return TaskFailedError(f"{kind} '{name}' failed: {details.message}", details)

    return describe


def when_all(tasks: Sequence[engine.Task[T]]) -> engine.Task[list[T]]:
    """Returns a task that completes once all of the provided tasks complete,
    surfacing the first failure (if any) only after every task has finished."""
    return engine.when_all(list(tasks))


def when_any(tasks: Sequence[engine.Task[Any]]) -> engine.Task[Any]:
    """Returns a task that completes when any of the provided tasks complete or fail.

    With no tasks it is complete at once, with an empty list (as in Dapr).
    """
    if not tasks:
        return engine.Task.completed([])
    return engine.when_any(list(tasks))


class RetryPolicy:
    """Represents the retry policy for a workflow or activity function."""

    def __init__(
        self,
        *,
        first_retry_interval: timedelta,
        max_number_of_attempts: int,
        backoff_coefficient: float | None = 1.0,
        max_retry_interval: timedelta | None = None,
        retry_timeout: timedelta | None = None,
    ) -> None:
        """Creates a new RetryPolicy instance.

        Args:
            first_retry_interval: The retry interval to use for the first retry attempt.
            max_number_of_attempts: The maximum number of attempts (the first included).
            backoff_coefficient: The factor applied to the interval after each retry.
            max_retry_interval: The maximum retry interval to use for any retry attempt.
            retry_timeout: The maximum amount of time to spend retrying the operation.

        Raises:
            ValueError: an interval or timeout is negative, no attempt is allowed, or the
                coefficient is below 1.
        """
        if first_retry_interval < timedelta(0):
            raise ValueError("first_retry_interval must be >= 0")
        if max_number_of_attempts < 1:
            raise ValueError("max_number_of_attempts must be >= 1")
        if backoff_coefficient is not None and backoff_coefficient < 1:
            raise ValueError("backoff_coefficient must be >= 1")
        if max_retry_interval is not None and max_retry_interval < timedelta(0):
            raise ValueError("max_retry_interval must be >= 0")
        if retry_timeout is not None and retry_timeout < timedelta(0):
            raise ValueError("retry_timeout must be >= 0")
        self._first_retry_interval = first_retry_interval
        self._max_number_of_attempts = max_number_of_attempts
        self._backoff_coefficient = backoff_coefficient
        self._max_retry_interval = max_retry_interval
        self._retry_timeout = retry_timeout
        self._obj = engine.RetryPolicy(
            first_retry_interval=max(first_retry_interval, _SMALLEST_INTERVAL),
            max_number_of_attempts=max_number_of_attempts,
            backoff_coefficient=1.0 if backoff_coefficient is None else backoff_coefficient,
            max_retry_interval=None
            if max_retry_interval is None
            else max(max_retry_interval, _SMALLEST_INTERVAL),
            retry_timeout=retry_timeout,
            non_retryable_error_types=[NonRetryableError.__name__],
        )

    @property
    def obj(self) -> engine.RetryPolicy:
        """The engine's policy this one stands for."""
        return self._obj

    @property
    def first_retry_interval(self) -> timedelta:
        """The retry interval to use for the first retry attempt."""
        return self._first_retry_interval

    @property
    def max_number_of_attempts(self) -> int:
        """The maximum number of retry attempts."""
        return self._max_number_of_attempts

    @property
    def backoff_coefficient(self) -> float | None:
        """The backoff coefficient to use for calculating the next retry interval."""
        return self._backoff_coefficient

    @property
    def max_retry_interval(self) -> timedelta | None:
        """The maximum retry interval to use for any retry attempt."""
        return self._max_retry_interval

    @property
    def retry_timeout(self) -> timedelta | None:
        """The maximum amount of time to spend retrying the operation."""
        return self._retry_timeout
