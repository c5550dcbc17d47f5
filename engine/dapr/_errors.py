"""Dapr's failure types: ``FailureDetails``, ``TaskFailedError`` and their kin."""

from __future__ import annotations

from typing import Any

import engine
from engine import FailureDetails as _NativeFailure


class FailureDetails:
    """Why an activity, child workflow or workflow failed (Dapr's ``FailureDetails``)."""

    def __init__(self, message: str, error_type: str, stack_trace: str | None) -> None:
        self._message = message
        self._error_type = error_type
        self._stack_trace = stack_trace

    @property
    def message(self) -> str:
        """The exception's message."""
        return self._message

    @property
    def error_type(self) -> str:
        """The exception's type name, e.g. ``"ValueError"``."""
        return self._error_type

    @property
    def stack_trace(self) -> str | None:
        """The formatted stack, when known."""
        return self._stack_trace

    def __repr__(self) -> str:
        return f"FailureDetails(error_type={self._error_type!r}, message={self._message!r})"

    @classmethod
    def _of(cls, failure: Any) -> FailureDetails:
        """Dapr's view of a native failure (or of anything shaped like Dapr's protobuf one)."""
        if isinstance(failure, FailureDetails):
            return failure
        if isinstance(failure, _NativeFailure):
            return cls(failure.message, failure.type, failure.stack or None)
        stack = getattr(failure, "stackTrace", None)
        return cls(
            getattr(failure, "errorMessage", str(failure)),
            getattr(failure, "errorType", type(failure).__name__),
            getattr(stack, "value", stack) or None,
        )


class TaskFailedError(engine.TaskFailedError):
    """An activity or child workflow failed; raised where the workflow yields its task.

    Also an ``engine.TaskFailedError``, so native ``except`` clauses catch it too.
    """

    def __init__(self, message: str, details: Any) -> None:
        dapr_details = FailureDetails._of(details)
        super().__init__(
            message,
            _NativeFailure(
                type=dapr_details.error_type,
                message=dapr_details.message,
                stack=dapr_details.stack_trace or "",
            ),
        )
        self._details = dapr_details

    @property
    def details(self) -> FailureDetails:
        """The failure's message, type and stack."""
        return self._details


class NonRetryableError(Exception):
    """Raised by an activity or child workflow: fail at once, whatever the retry policy."""


class OrchestrationFailedError(Exception):
    """Raised by ``WorkflowState.raise_if_failed`` for a failed instance."""

    def __init__(self, message: str, failure_details: FailureDetails) -> None:
        super().__init__(message)
        self._failure_details = failure_details

    @property
    def failure_details(self) -> FailureDetails:
        """Why the instance failed."""
        return self._failure_details
