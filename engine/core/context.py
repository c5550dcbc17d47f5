"""The context a workflow sees: every method is deterministic under replay."""

from __future__ import annotations

import random as _random
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog

from engine.core.retry import RetryPolicy
from engine.core.tasks import Task

_UUID_NAMESPACE = uuid.UUID("5c8f1c3e-2f0b-4f7e-9a57-6a1c0d7e1b11")


class ExecutionHost(Protocol):
    """What a context asks of the execution replaying it (``WorkflowExecution``)."""

    instance_id: str
    current_time: datetime
    is_replaying: bool
    custom_status: Any

    @property
    def execution_id(self) -> str: ...

    @property
    def workflow_name(self) -> str: ...

    @property
    def app_id(self) -> str: ...

    @property
    def propagated(self) -> Any: ...

    def schedule_activity(
        self,
        activity: Callable[..., Any] | str,
        input: Any,
        retry_policy: RetryPolicy | None,
        task_queue: str | None,
        timeout: timedelta | None,
        propagated: Any = None,
    ) -> Task[Any]: ...

    def schedule_child(
        self,
        workflow: Callable[..., Any] | str,
        input: Any,
        instance_id: str | None,
        retry_policy: RetryPolicy | None,
        app_id: str | None = None,
        propagated: Any = None,
    ) -> Task[Any]: ...

    def schedule_timer(self, fire_at: datetime | timedelta) -> Task[None]: ...

    def wait_for_event(self, name: str, timeout: timedelta | None) -> Task[Any]: ...

    def request_continue_as_new(self, new_input: Any, save_events: bool) -> None: ...

    def is_patched(self, patch_name: str) -> bool: ...


class ReplaySafeLogger:
    """A structlog logger that stays silent while the workflow replays old history."""

    def __init__(self, ctx: WorkflowContext) -> None:
        self._ctx = ctx
        self._log = structlog.get_logger("jetloom.workflow")

    def _emit(self, level: str, event: str, **kw: Any) -> None:
        if self._ctx.is_replaying:
            return
        bound = self._log.bind(instance_id=self._ctx.instance_id, workflow=self._ctx.workflow_name)
        getattr(bound, level)(event, **kw)

    def debug(self, event: str, **kw: Any) -> None:
        """Log at debug level unless replaying."""
        self._emit("debug", event, **kw)

    def info(self, event: str, **kw: Any) -> None:
        """Log at info level unless replaying."""
        self._emit("info", event, **kw)

    def warning(self, event: str, **kw: Any) -> None:
        """Log at warning level unless replaying."""
        self._emit("warning", event, **kw)

    def error(self, event: str, **kw: Any) -> None:
        """Log at error level unless replaying."""
        self._emit("error", event, **kw)

    def exception(self, event: str, **kw: Any) -> None:
        """Log an error with the current exception unless replaying."""
        self._emit("exception", event, **kw)


class WorkflowContext:
    """What a workflow function receives as ``ctx``.

    Workflow code must be deterministic: use this context's clock, ids and random numbers,
    and await only the tasks it returns.
    """

    def __init__(self, execution: ExecutionHost) -> None:
        self._execution = execution
        self._uuid_counter = 0
        self._random: _random.Random | None = None
        self.logger = ReplaySafeLogger(self)
        """Structured logger, silent while replaying."""

    @property
    def instance_id(self) -> str:
        """The instance's id."""
        return self._execution.instance_id

    @property
    def execution_id(self) -> str:
        """The id of this run of the instance (changes on continue_as_new)."""
        return self._execution.execution_id

    @property
    def workflow_name(self) -> str:
        """The workflow's registered name."""
        return self._execution.workflow_name

    @property
    def app_id(self) -> str:
        """The application whose runtimes run this instance ('': the default one)."""
        return self._execution.app_id

    @property
    def propagated_history(self) -> Any:
        """What the caller passed as ``propagated`` to ``call_child_workflow`` (the decoded
        JSON value), or None: history a parent hands down, kept apart from the input."""
        return self._execution.propagated

    @property
    def is_replaying(self) -> bool:
        """True while the code re-executes events already in history."""
        return self._execution.is_replaying

    @property
    def current_utc_datetime(self) -> datetime:
        """The time of the current workflow task as recorded in history (never the wall clock)."""
        return self._execution.current_time

    def new_uuid(self) -> uuid.UUID:
        """A UUID that is the same on every replay."""
        self._uuid_counter += 1
        return uuid.uuid5(_UUID_NAMESPACE, f"{self.execution_id}:{self._uuid_counter}")

    def random(self) -> _random.Random:
        """A ``random.Random`` seeded from the run id, so replays draw the same numbers."""
        if self._random is None:
            self._random = _random.Random(self.execution_id)
        return self._random

    def call_activity(
        self,
        activity: Callable[..., Any] | str,
        *,
        input: Any = None,
        retry_policy: RetryPolicy | None = None,
        task_queue: str | None = None,
        start_to_close_timeout: timedelta | None = None,
        propagated_history: Any = None,
    ) -> Task[Any]:
        """Schedule an activity; the task's result is its return value.

        Args:
            activity: the activity function or its registered name.
            input: the activity's input (JSON-encodable).
            retry_policy: how to retry failures; without one a failure is final.
            task_queue: the queue whose workers run it (default: ``"default"``).
            start_to_close_timeout: limit of one attempt; exceeding it fails the attempt with
                ``TimeoutError`` (retried per the policy).
            propagated_history: a JSON-encodable value the activity reads as
                ``ctx.propagated_history``, apart from its input (Dapr's history propagation).
        """
        return self._execution.schedule_activity(
            activity, input, retry_policy, task_queue, start_to_close_timeout,
            propagated_history,
        )

    def call_child_workflow(
        self,
        workflow: Callable[..., Any] | str,
        *,
        input: Any = None,
        instance_id: str | None = None,
        retry_policy: RetryPolicy | None = None,
        app_id: str | None = None,
        propagated_history: Any = None,
    ) -> Task[Any]:
        """Start a child workflow; the task's result is its output.

        Args:
            workflow: the workflow function or its registered name.
            input: the child's input (JSON-encodable).
            instance_id: the child's id (default: ``<this id>-<task id>``).
            retry_policy: how to retry a failed child (each retry is a new instance).
            app_id: the application whose runtimes run the child (default: this instance's).
            propagated_history: a JSON-encodable value the child reads as
                ``ctx.propagated_history``, apart from its input.
        """
        return self._execution.schedule_child(
            workflow, input, instance_id, retry_policy, app_id, propagated_history
        )

    def create_timer(self, fire_at: datetime | timedelta) -> Task[None]:
        """A durable timer firing at ``fire_at`` (or after that long)."""
        return self._execution.schedule_timer(fire_at)

    def wait_for_external_event(self, name: str, *, timeout: timedelta | None = None) -> Task[Any]:
        """Wait for an event raised to this instance (names match case-insensitively).

        With ``timeout``, the task fails with ``TimeoutError`` if no event came in time.
        """
        return self._execution.wait_for_event(name, timeout)

    def continue_as_new(self, new_input: Any = None, *, save_events: bool = False) -> None:
        """Restart this instance with fresh history and ``new_input`` when the code returns.

        With ``save_events``, external events not yet consumed are carried into the new run.
        """
        self._execution.request_continue_as_new(new_input, save_events)

    def set_custom_status(self, value: Any) -> None:
        """Publish a JSON value readable by clients as the instance's custom status."""
        self._execution.custom_status = value

    def is_patched(self, patch_name: str) -> bool:
        """True on new runs and on instances that passed this point with the patch applied."""
        return self._execution.is_patched(patch_name)
