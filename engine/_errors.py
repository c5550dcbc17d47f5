"""Exceptions a workflow author or client sees."""

from __future__ import annotations

from engine._events import FailureDetails


class TaskFailedError(Exception):
    """An activity or child workflow failed; raised inside the workflow where it was awaited.

    Attributes:
        failure_details: the failure's type name, message and stack text.
    """

    def __init__(self, message: str, failure_details: FailureDetails) -> None:
        super().__init__(message)
        self.failure_details = failure_details

    @property
    def error_type(self) -> str:
        """The failing exception's type name, e.g. ``"ValueError"``."""
        return self.failure_details.type


class NonDeterminismError(Exception):
    """Workflow code did not do what its history says it did when it first ran.

    Attributes:
        position: index in the run's history of the event that did not match.
        expected: what the history holds at that position.
        actual: what the code did instead.
    """

    def __init__(self, position: int, expected: str, actual: str) -> None:
        super().__init__(
            f"non-deterministic workflow at history position {position}: "
            f"history has {expected}, code did {actual}; deploy code that replays the "
            "recorded history (use is_patched or a versioned_workflow for changes)"
        )
        self.position = position
        self.expected = expected
        self.actual = actual


class WorkflowNotRegisteredError(LookupError):
    """No workflow (or no such version) of that name is registered in this runtime."""


class ActivityNotRegisteredError(LookupError):
    """No activity of that name is registered in this runtime."""


class InvalidInstanceIdError(ValueError):
    """An instance id with characters or a length that jetloom does not accept."""


class InstanceAlreadyRunningError(RuntimeError):
    """A workflow was scheduled with the id of an instance that is still running."""


class InstanceFinishedError(RuntimeError):
    """The instance has finished (completed, failed or terminated) and takes no more events.

    Attributes:
        status: the instance's final status, e.g. ``"COMPLETED"``.
    """

    def __init__(self, message: str, status: str) -> None:
        super().__init__(message)
        self.status = status


class InstanceNotFoundError(LookupError):
    """No instance with that id exists."""


class InputDecodeError(ValueError):
    """A payload does not decode to the parameter's type hint."""
