"""How long finished instances are kept: Dapr's ``stateRetentionPolicy`` as a value object."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from engine.core.status import WorkflowStatus


@dataclass(frozen=True)
class RetentionPolicy:
    """How long an instance is kept after it finished, by final status.

    An instance that reaches COMPLETED, FAILED or TERMINATED is purged (history, record,
    offloaded payloads, its child workflows) once the duration for that status has passed
    since it finished. ``any_terminal`` applies to each status without a duration of its
    own; a status with neither is kept until purged by hand. The policy is the runtime's that
    commits the run's last workflow task, so it applies to instances that finish after it is
    set; give every runtime of a prefix the same one.
    """

    completed: timedelta | None = None
    """Keep COMPLETED instances this long."""
    failed: timedelta | None = None
    """Keep FAILED instances this long."""
    terminated: timedelta | None = None
    """Keep TERMINATED instances this long."""
    any_terminal: timedelta | None = None
    """Keep instances of any final status without a duration of its own this long."""

    def __post_init__(self) -> None:
        for name in ("completed", "failed", "terminated", "any_terminal"):
            value = getattr(self, name)
            if value is not None and (
                not isinstance(value, timedelta) or value < timedelta(0)
            ):
                raise ValueError(
                    f"RetentionPolicy({name}={value!r}): give a timedelta of 0 or more"
                )

    def keep_for(self, status: str) -> timedelta | None:
        """How long an instance that ended with ``status`` is kept (None: until purged)."""
        specific = {
            WorkflowStatus.COMPLETED.value: self.completed,
            WorkflowStatus.FAILED.value: self.failed,
            WorkflowStatus.TERMINATED.value: self.terminated,
        }
        if status not in specific:
            return None
        chosen = specific[status]
        return self.any_terminal if chosen is None else chosen
