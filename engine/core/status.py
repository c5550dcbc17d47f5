"""The one vocabulary of instance statuses."""

from __future__ import annotations

import enum


class WorkflowStatus(enum.Enum):
    """Where an instance stands."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    TERMINATED = "TERMINATED"
    SUSPENDED = "SUSPENDED"
    STALLED = "STALLED"
    CONTINUED_AS_NEW = "CONTINUED_AS_NEW"

    @property
    def is_terminal(self) -> bool:
        """True for COMPLETED, FAILED and TERMINATED: the instance will not change again."""
        return self in (WorkflowStatus.COMPLETED, WorkflowStatus.FAILED, WorkflowStatus.TERMINATED)
