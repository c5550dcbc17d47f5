"""The contexts a Dapr workflow and activity receive: ``DaprWorkflowContext`` and
``WorkflowActivityContext``, over the engine's own."""

from __future__ import annotations

import hashlib
import os
import random
import re
import string
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import msgspec

import engine
from engine.dapr._errors import FailureDetails
from engine.dapr._history import naive_utc
from engine.dapr._payload import encode, to_json
from engine.dapr._propagation import HistoryLog, PropagatedHistory, PropagationScope
from engine.dapr._task import (
    RetryPolicy,
    dapr_task,
    task_failure,
)

T = TypeVar("T")

_UUID_NAMESPACE = uuid.UUID("9e952958-5e33-4daf-827f-2fa12937b875")
"""The namespace of Dapr's deterministic UUIDs (shared with durabletask's .NET SDK)."""


def own_app_id() -> str:
    """This process's application id, from ``APP_ID`` (what ``dapr run --app-id`` sets)."""
    return os.environ.get("APP_ID", "")


def task_queue_of(app_id: str) -> str:
    """The activity task queue that the workers of application ``app_id`` serve.

    Queues are subject tokens: other characters become '_'. Without an application id, the
    engine's own ``default`` queue.
    """
    return re.sub(r"[^A-Za-z0-9_-]", "_", app_id) if app_id else "default"


def name_of(target: Callable[..., Any] | str) -> str:
    """The registered name of a workflow or activity (Dapr's ``_dapr_alternate_name``)."""
    if isinstance(target, str):
        return target
    alternate = getattr(target, "_dapr_alternate_name", None)
    return alternate if isinstance(alternate, str) else target.__name__


def _raw(value: Any) -> bytes | None:
    encoded = encode(value)
    return None if encoded is None else bytes(encoded)


class DaprWorkflowContext:
    """Context object used by workflow implementations to perform actions such as scheduling
    activities, durable timers, waiting for external events, and for getting basic
    information about the current workflow instance.

    Anything not defined here is looked up on the engine's ``WorkflowContext``.
    """

    def __init__(
        self,
        ctx: engine.WorkflowContext,
        logger_options: Any = None,
        *,
        app_id: str | None = None,
        propagated_history: PropagatedHistory | None = None,
    ) -> None:
        self.__obj = ctx
        self._app_id = own_app_id() if app_id is None else app_id
        self._propagated = propagated_history
        self._log = HistoryLog(self._app_id, ctx.instance_id, ctx.workflow_name)
        self._uuid_counter = 0
        self._timestamp_counter = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__obj, name)

    # ---------------------------------------------------------------- identity and time

    @property
    def instance_id(self) -> str:
        """The ID of the current workflow instance."""
        return self.__obj.instance_id

    @property
    def app_id(self) -> str:
        """The application id of the app running this workflow (``APP_ID``)."""
        return self._app_id

    @property
    def current_utc_datetime(self) -> datetime:
        """The time of the current history event, as a naive UTC datetime (as in Dapr)."""
        return naive_utc(self.__obj.current_utc_datetime)

    @property
    def is_replaying(self) -> bool:
        """True while the workflow re-executes events already in its history."""
        return self.__obj.is_replaying

    def now(self) -> datetime:
        """Alias for ``current_utc_datetime``."""
        return self.current_utc_datetime

    def now_with_sequence(self) -> datetime:
        """``current_utc_datetime`` plus one microsecond per earlier call: ordered, unique
        and deterministic timestamps."""
        offset = timedelta(microseconds=self._timestamp_counter)
        self._timestamp_counter += 1
        return self.current_utc_datetime + offset

    def current_utc_datetime_with_sequence(self) -> datetime:
        """Alias for ``now_with_sequence``."""
        return self.now_with_sequence()

    def random(self) -> random.Random:
        """A PRNG seeded from the instance id and the workflow's current time (Dapr's seed)."""
        seed_text = f"{self.instance_id}:{int(self.__obj.current_utc_datetime.timestamp())}"
        digest = hashlib.sha256(seed_text.encode()).digest()
        return random.Random(int.from_bytes(digest[:8], byteorder="big"))

    def uuid4(self) -> uuid.UUID:
        """A UUID that is the same on every replay (Dapr's and .NET's ``NewGuid``)."""
        name = f"{self.instance_id}_{self.current_utc_datetime.isoformat()}_{self._uuid_counter}"
        self._uuid_counter += 1
        return uuid.uuid5(_UUID_NAMESPACE, name)

    def new_guid(self) -> uuid.UUID:
        """Alias for ``uuid4``."""
        return self.uuid4()

    def random_string(self, length: int, *, alphabet: str | None = None) -> str:
        """A deterministic random string of ``length`` characters of ``alphabet``."""
        if length < 0:
            raise ValueError("length must be non-negative")
        chars = alphabet if alphabet is not None else string.ascii_letters + string.digits
        if not chars:
            raise ValueError("alphabet must not be empty")
        rnd = self.random()
        return "".join(chars[rnd.randrange(0, len(chars))] for _ in range(length))

    def random_int(self, min_value: int = 0, max_value: int = 2**31 - 1) -> int:
        """A deterministic random integer in [min_value, max_value]."""
        if min_value > max_value:
            raise ValueError("min_value must be <= max_value")
        return self.random().randint(min_value, max_value)

    def random_choice(self, sequence: Sequence[T]) -> T:
        """A deterministic random element of a non-empty sequence."""
        if not sequence:
            raise IndexError("Cannot choose from empty sequence")
        return self.random().choice(sequence)

    # ------------------------------------------------------------------------- commands

    def set_custom_status(self, custom_status: str) -> None:
        """Set the custom status (a string as it is; any other value as its JSON)."""
        if custom_status is None or isinstance(custom_status, str):
            self.__obj.set_custom_status(custom_status)
        else:
            self.__obj.set_custom_status(to_json(custom_status))

    def create_timer(self, fire_at: datetime | timedelta) -> engine.Task[Any]:
        """A durable timer firing at ``fire_at`` (naive datetimes are UTC) or after that long."""
        if isinstance(fire_at, datetime) and fire_at.utcoffset() is None:
            fire_at = fire_at.replace(tzinfo=UTC)
        return dapr_task(self.__obj.create_timer(fire_at))

    def call_activity(
        self,
        activity: Callable[..., Any] | str,
        *,
        input: Any = None,
        retry_policy: RetryPolicy | None = None,
        app_id: str | None = None,
        propagation: PropagationScope | None = None,
    ) -> engine.Task[Any]:
        """Schedule an activity; the task completes with its result or fails with
        ``TaskFailedError``.

        Args:
            activity: the activity function, or its name (for an activity of another app).
            input: the JSON-serializable input.
            retry_policy: how to retry failures (``NonRetryableError`` is never retried).
            app_id: the application whose workers run the activity (default: this one).
            propagation: send this workflow's history along (``OWN_HISTORY``, ``LINEAGE``).
        """
        name = name_of(activity)
        raw_input = _raw(input)
        scheduled = self._log.scheduled(
            "taskScheduled", name, self.current_utc_datetime,
            None if raw_input is None else raw_input.decode(),
        )
        inner = self.__obj.call_activity(
            name,
            input=None if raw_input is None else msgspec.Raw(raw_input),
            retry_policy=None if retry_policy is None else retry_policy.obj,
            task_queue=task_queue_of(app_id if app_id is not None else self._app_id),
            propagated_history=self._envelope(propagation),
        )
        return dapr_task(
            inner,
            describe_failure=task_failure("Activity", name),
            on_done=self._logger_of("taskCompleted", "taskFailed", scheduled),
        )

    def call_child_workflow(
        self,
        workflow: Callable[..., Any] | str,
        *,
        input: Any = None,
        instance_id: str | None = None,
        retry_policy: RetryPolicy | None = None,
        app_id: str | None = None,
        propagation: PropagationScope | None = None,
    ) -> engine.Task[Any]:
        """Start a child workflow; the task completes with its output or fails with
        ``TaskFailedError``.

        Args:
            workflow: the workflow function, or its name (for a workflow of another app).
            input: the JSON-serializable input.
            instance_id: the child's instance id (default: derived from this instance's).
            retry_policy: how to retry a failed child (a retry is a new child instance).
            app_id: the application whose workers run the child (default: this one).
            propagation: send this workflow's history along (``OWN_HISTORY``, ``LINEAGE``).
        """
        name = name_of(workflow)
        raw_input = _raw(input)
        scheduled = self._log.scheduled(
            "childWorkflowInstanceCreated", name, self.current_utc_datetime,
            None if raw_input is None else raw_input.decode(),
        )
        inner = self.__obj.call_child_workflow(
            name,
            input=None if raw_input is None else msgspec.Raw(raw_input),
            instance_id=instance_id,
            retry_policy=None if retry_policy is None else retry_policy.obj,
            app_id=app_id,
            propagated_history=self._envelope(propagation),
        )
        return dapr_task(
            inner,
            describe_failure=task_failure("Child workflow", name),
            on_done=self._logger_of(
                "childWorkflowInstanceCompleted", "childWorkflowInstanceFailed", scheduled
            ),
        )

    def wait_for_external_event(
        self, name: str, *, timeout: datetime | timedelta | None = None
    ) -> engine.Task[Any]:
        """Wait for an event raised to this instance (names match case-insensitively).

        ``timeout``: None or a negative timedelta waits indefinitely; ``timedelta(0)`` fails
        at once with ``TimeoutError``; a positive timedelta or a datetime fails with
        ``TimeoutError`` when it passes first.
        """
        if isinstance(timeout, timedelta) and timeout == timedelta(0):
            return engine.Task.failed(TimeoutError(
                f"Wait for external event {name!r} canceled immediately due to zero timeout"
            ))
        wait: timedelta | None
        if timeout is None or (isinstance(timeout, timedelta) and timeout < timedelta(0)):
            wait = None
        elif isinstance(timeout, datetime):
            deadline = timeout if timeout.utcoffset() is not None else timeout.replace(tzinfo=UTC)
            wait = max(deadline - self.__obj.current_utc_datetime, timedelta(microseconds=1))
        else:
            wait = timeout

        def timed_out(error: BaseException) -> BaseException:
            if isinstance(error, TimeoutError):
                return TimeoutError(f"Timed out after {timeout!r} waiting for external event "
                                    f"{name!r}")
            return error

        return dapr_task(
            self.__obj.wait_for_external_event(name, timeout=wait), describe_failure=timed_out
        )

    def continue_as_new(self, new_input: Any, *, save_events: bool = False) -> None:
        """Restart this instance with fresh history and ``new_input`` once the code returns.

        With ``save_events``, external events not yet consumed are carried into the new run.
        """
        encoded = encode(new_input)
        self.__obj.continue_as_new(encoded, save_events=save_events)

    def is_patched(self, patch_name: str) -> bool:
        """True on new runs and on instances that passed this point with the patch applied."""
        return self.__obj.is_patched(patch_name)

    def get_propagated_history(self) -> PropagatedHistory | None:
        """History propagated from the parent workflow, or None if none was."""
        return self._propagated

    # -------------------------------------------------------------------------- helpers

    def _envelope(self, scope: PropagationScope | None) -> dict[str, Any] | None:
        if scope is None:
            return None
        return self._log.envelope(scope, self._propagated)

    def _logger_of(
        self, completed: str, failed: str, scheduled: int
    ) -> Callable[[Any, BaseException | None], None]:
        def log_result(result: Any, error: BaseException | None) -> None:
            when = self.current_utc_datetime
            if error is None:
                self._log.closed(
                    completed, scheduled, when,
                    output=None if result is None else to_json(result),
                )
            else:
                details = getattr(error, "details", None)
                failure = details if isinstance(details, FailureDetails) else FailureDetails(
                    str(error), type(error).__name__, None
                )
                self._log.closed(failed, scheduled, when, failure=failure)

        return log_result


class ActivityContext:
    """Dapr's inner activity context (``WorkflowActivityContext.get_inner_context()``)."""

    def __init__(
        self, ctx: engine.ActivityContext, propagated_history: PropagatedHistory | None
    ) -> None:
        self._ctx = ctx
        self._propagated = propagated_history

    @property
    def orchestration_id(self) -> str:
        """The ID of the workflow instance that scheduled this activity."""
        return self._ctx.workflow_id

    @property
    def task_id(self) -> int:
        """The task ID of this invocation in the workflow's history."""
        return self._ctx.task_id

    @property
    def task_execution_id(self) -> str:
        """Stable across retries of the same call: an idempotency key."""
        return self._ctx.task_execution_id

    def get_propagated_history(self) -> PropagatedHistory | None:
        """History propagated from the calling workflow, or None."""
        return self._propagated


class WorkflowActivityContext:
    """Defines properties and methods for task activity context objects."""

    def __init__(self, ctx: ActivityContext) -> None:
        self.__obj = ctx

    @property
    def workflow_id(self) -> str:
        """Gets the unique ID of the current workflow instance."""
        return self.__obj.orchestration_id

    @property
    def task_id(self) -> int:
        """Gets the unique ID of the current workflow task."""
        return self.__obj.task_id

    def get_inner_context(self) -> ActivityContext:
        """The inner activity context (``orchestration_id``, ``task_id``,
        ``task_execution_id``)."""
        return self.__obj

    def get_propagated_history(self) -> PropagatedHistory | None:
        """History propagated from the calling workflow, or None if the caller did not opt in
        to history propagation."""
        return self.__obj.get_propagated_history()
