"""Exceptions a workflow author or client sees: one hierarchy under ``JetloomError``.

Each also derives from the builtin exception it has always been (``LookupError``,
``ValueError``, ``RuntimeError``), so ``except LookupError`` and the like keep working.
"""

from __future__ import annotations

from engine.core.events import FailureDetails


class JetloomError(Exception):
    """Base of every error jetloom raises on purpose."""


class TaskFailedError(JetloomError):
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


class NonDeterminismError(JetloomError):
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


class WorkflowNotRegisteredError(JetloomError, LookupError):
    """No workflow (or no such version) of that name is registered in this runtime."""


class ActivityNotRegisteredError(JetloomError, LookupError):
    """No activity of that name is registered in this runtime."""


class InvalidInstanceIdError(JetloomError, ValueError):
    """An instance id with characters or a length that jetloom does not accept."""


class InstanceAlreadyRunningError(JetloomError, RuntimeError):
    """A workflow was scheduled with the id of an instance that is still running."""


class InstanceFinishedError(JetloomError, RuntimeError):
    """The instance has finished (completed, failed or terminated) and takes no more events.

    Attributes:
        status: the instance's final status, e.g. ``"COMPLETED"``.
    """

    def __init__(self, message: str, status: str) -> None:
        super().__init__(message)
        self.status = status


class InstanceNotFoundError(JetloomError, LookupError):
    """No instance with that id exists."""


class InputDecodeError(JetloomError, ValueError):
    """A payload does not decode to the parameter's type hint."""


class TaskCancelledError(JetloomError):
    """A task the workflow cancelled (``Task.cancel()``); raised where it is awaited."""


class ScheduleNotFoundError(JetloomError, LookupError):
    """No recurring schedule with that id exists."""


class ScheduleAlreadyExistsError(JetloomError, RuntimeError):
    """A recurring schedule with that id exists already."""
