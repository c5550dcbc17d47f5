"""The replay executor: history in, new history events out. Pure: no I/O, no clock, no NATS.

A ``WorkflowExecution`` holds one run of a workflow: the user's coroutine (or generator) and its
context. Feeding it the run's history re-executes the code (replay); ``run_task`` then feeds the
new incoming events and returns the events the task appends: its ``WorkflowTaskStarted``, the
incoming events it accepted, and the commands the code issued (activities, timers, children,
completion). The runtime turns those events into one atomic append plus dispatches.
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import msgspec

from engine.core.codec import from_json, inspect_signature, to_json
from engine.core.context import WorkflowContext
from engine.core.errors import NonDeterminismError, TaskCancelledError
from engine.core.events import (
    NULL,
    ChildWorkflowCompleted,
    ChildWorkflowFailed,
    ChildWorkflowScheduled,
    EventRaised,
    ExecutionCompleted,
    ExecutionResumed,
    ExecutionStarted,
    ExecutionSuspended,
    ExecutionTerminated,
    FailureDetails,
    HistoryEvent,
    TaskCancelRequested,
    TaskCompleted,
    TaskFailed,
    TaskScheduled,
    TimerCreated,
    TimerFired,
    WorkflowTaskStarted,
)
from engine.core.instance_ids import app_token, check_instance_id
from engine.core.registry import Registry, WorkflowDefinition, check_name
from engine.core.results import TaskResult, failure_from
from engine.core.retry import RetryPolicy
from engine.core.status import WorkflowStatus
from engine.core.tasks import CompletableTask, Task, failed_error

RUNNING = WorkflowStatus.RUNNING.value
COMPLETED = WorkflowStatus.COMPLETED.value
FAILED = WorkflowStatus.FAILED.value
TERMINATED = WorkflowStatus.TERMINATED.value
SUSPENDED = WorkflowStatus.SUSPENDED.value
CONTINUED_AS_NEW = WorkflowStatus.CONTINUED_AS_NEW.value

Command = TaskScheduled | TimerCreated | ChildWorkflowScheduled | TaskCancelRequested


@dataclass(frozen=True)
class ReplayRules:
    """How replay holds workflow code to its history.

    The defaults are jetloom's: a running workflow's code stays alive between its tasks, and
    replayed code must issue exactly the commands history recorded, by each task boundary.
    ``ReplayRules.dapr()`` gives Dapr's (durabletask's) rules, which ``engine.dapr`` uses.
    """

    replay_every_task: bool = False
    """Replay each task from history instead of keeping the live code between tasks: code
    changed inside a running process takes effect at the instance's next task."""
    calls_past_history_are_new: bool = False
    """Commands the replayed code issues that history does not show (yet) are new commands of
    the next task, not a ``NonDeterminismError``; only a recorded command that differs from
    the one issued in its place is."""
    patches_must_be_checked: bool = False
    """A patch recorded in a task (``workflow_task_started.patches``) that the replayed code
    no longer checks by the end of that task is a ``NonDeterminismError``."""

    @classmethod
    def dapr(cls) -> ReplayRules:
        """Dapr's rules: replay on every task, calls past history are new, patches checked."""
        return cls(True, True, True)


def describe(event: HistoryEvent | None) -> str:
    """A short readable name of an event for error messages."""
    if event is None:
        return "no further event"
    tag = type(event).__struct_config__.tag
    name = getattr(event, "name", None)
    ident = getattr(event, "task_id", getattr(event, "timer_id", None))
    parts = [str(tag)]
    if name is not None:
        parts.append(repr(name))
    if ident is not None:
        parts.append(f"#{ident}")
    return " ".join(parts)


@dataclass
class _ActivityCall:
    task: CompletableTask[Any]
    name: str
    input: msgspec.Raw
    task_queue: str
    retry_policy: RetryPolicy | None
    timeout: float | None
    decode: Callable[[msgspec.Raw], Any]
    propagated: msgspec.Raw = field(default_factory=lambda: NULL)
    task_execution_id: str = ""
    attempt: int = 1
    first_attempt_at: datetime | None = None
    task_id: int = 0
    """The id of the current attempt's task_scheduled."""
    retry_timer_id: int | None = None
    """The back-off timer before the next attempt, while one is set."""


@dataclass
class _ChildCall:
    task: CompletableTask[Any]
    name: str
    instance_id: str
    input: msgspec.Raw
    retry_policy: RetryPolicy | None
    decode: Callable[[msgspec.Raw], Any]
    app_id: str = ""
    propagated: msgspec.Raw = field(default_factory=lambda: NULL)
    attempt: int = 1
    first_attempt_at: datetime | None = None
    task_id: int = 0
    retry_timer_id: int | None = None


class WorkflowExecution:
    """One run of one workflow instance, replayed from its history and advanced task by task."""

    def __init__(
        self,
        registry: Registry,
        instance_id: str,
        history: Sequence[HistoryEvent],
        rules: ReplayRules | None = None,
    ):
        """Replay ``history`` (the run's events, starting with ExecutionStarted) under
        ``rules`` (default: jetloom's).

        Raises:
            NonDeterminismError: the code does not reproduce the history.
            WorkflowNotRegisteredError: the workflow (version) is not registered here.
        """
        if not history or not isinstance(history[0], ExecutionStarted):
            raise ValueError(f"history of {instance_id!r} must begin with execution_started")
        self._registry = registry
        self._rules = rules or ReplayRules()
        self.instance_id = instance_id
        self.started: ExecutionStarted = history[0]
        self.definition: WorkflowDefinition = registry.workflow(
            self.started.name, self.started.version
        )
        self.ctx = WorkflowContext(self)
        self.current_time: datetime = self.started.timestamp
        self.is_replaying = True
        self.custom_status: Any = None
        self.status = RUNNING
        self.output: msgspec.Raw = NULL
        self.failure: FailureDetails | None = None
        self.history_length = 0

        self._code: Any = None  # the workflow's coroutine or generator
        self._code_started = False
        self._awaiting: Task[Any] | None = None
        self._next_id = 0
        self._pending: deque[Command] = deque()  # issued by code, not yet seen in history
        self._new: list[HistoryEvent] = []  # events of the task being run
        self._handlers: dict[int, Callable[[HistoryEvent], None]] = {}
        self._event_waiters: dict[str, deque[CompletableTask[Any]]] = {}
        self._event_buffer: dict[str, deque[EventRaised]] = {}
        self._seen_event_ids: set[str] = set()
        # Events taken by the run this one continued from (save_events): a redelivery of one
        # of them, addressed to that run, is a duplicate here too.
        self._inherited_event_ids = frozenset(self.started.seen_event_ids)
        self._carried_late: list[EventRaised] = []
        self._suspended = False
        self._held: list[HistoryEvent] = []
        self._patches_recorded: set[str] = set()
        self._patches_due: set[str] = set()  # recorded in the task being replayed
        self._patches_new: list[str] = []
        self._patch_answers: dict[str, bool] = {}
        self._continue_as_new: tuple[msgspec.Raw, bool] | None = None
        self._activity_calls: dict[int, _ActivityCall] = {}
        """Activity calls by the task id of their current attempt."""

        for event in history:
            self._apply(event)
        self._check_no_pending(None)
        self._check_patches_checked(None)
        if self.is_complete and not any(isinstance(e, ExecutionCompleted) for e in history):
            # The first run did not end here: replay must not end a run history says is open.
            ended = self.status
            if self.failure is not None:
                ended += f": {self.failure.type}: {self.failure.message}"
            raise NonDeterminismError(
                self.history_length, describe(None), f"ended the workflow ({ended})"
            )

    # ----------------------------------------------------------------- public

    @property
    def execution_id(self) -> str:
        """The run's id."""
        return self.started.execution_id

    @property
    def workflow_name(self) -> str:
        """The workflow's name."""
        return self.started.name

    @property
    def app_id(self) -> str:
        """The application whose runtimes run this instance ('': the default one)."""
        return self.started.app_id

    @property
    def propagated(self) -> Any:
        """The history a calling workflow propagated to this run (decoded), or None."""
        return from_json(self.started.propagated)

    @property
    def is_complete(self) -> bool:
        """True once the run has ended."""
        return self.status in (COMPLETED, FAILED, TERMINATED, CONTINUED_AS_NEW)

    def accepts(self, event: HistoryEvent) -> bool:
        """False for an incoming event this run has already seen or can no longer use."""
        if self.is_complete:
            return False
        if isinstance(
            event,
            TaskCompleted | TaskFailed | ChildWorkflowCompleted | ChildWorkflowFailed | TimerFired,
        ):
            # While suspended, a delivered result waits in _held with its handler still set.
            key = _completion_id(event)
            return key in self._handlers and all(_completion_id(h) != key for h in self._held)
        if isinstance(event, EventRaised):
            return not self._event_seen(event)
        if isinstance(event, ExecutionSuspended):
            return not self._suspended
        if isinstance(event, ExecutionResumed):
            return self._suspended
        return not isinstance(
            event, ExecutionStarted | WorkflowTaskStarted | ExecutionCompleted | TaskCancelRequested
        )

    def _event_seen(self, event: EventRaised) -> bool:
        """True if this run (or the run it continued, with save_events) has taken the event."""
        return bool(event.event_id) and (
            event.event_id in self._seen_event_ids
            or event.event_id in self._inherited_event_ids
            or any(getattr(h, "event_id", "") == event.event_id for h in self._held)
        )

    def run_task(self, incoming: Sequence[HistoryEvent], now: datetime) -> TaskResult:
        """Run one workflow task at time ``now`` with the incoming events.

        Returns the events to append. Incoming events this run does not accept (duplicates,
        results of finished tasks) are left out.
        """
        self.is_replaying = False
        self._new = []
        self._patches_new = []
        # Workflow time never goes backwards, even when the workers' clocks disagree.
        now = max(now, self.current_time)
        task_started_at = len(self._new)
        self._apply(WorkflowTaskStarted(timestamp=now), record=True)
        for event in incoming:
            if self.accepts(event):
                self._apply(event, record=True)
            elif self._carries(event):
                # Raised after the run ended by continue_as_new(save_events=True) in this
                # very task: the next run's, like any event it had not consumed.
                assert isinstance(event, EventRaised)
                self._carried_late.append(event)
                if event.event_id:
                    self._seen_event_ids.add(event.event_id)
        self._flush_commands()
        if self._continue_as_new is not None and not self.is_complete:
            self._finish_continue_as_new()
        # The task's patches are known only now: rewrite its WorkflowTaskStarted.
        self._new[task_started_at] = WorkflowTaskStarted(
            timestamp=now, patches=tuple(self._patches_new)
        )
        result = TaskResult(
            new_events=self._new,
            status=SUSPENDED if self._suspended and not self.is_complete else self.status,
            output=self.output,
            failure=self.failure,
            custom_status=None if self.custom_status is None else to_json(self.custom_status),
        )
        if self.status == CONTINUED_AS_NEW:
            result.continue_as_new, result.carried_events = self._next_run(now)
        self._new = []
        return result

    def _carries(self, event: HistoryEvent) -> bool:
        """True for an external event the next run takes over: the run continued as new with
        save_events, and has not seen the event."""
        return (
            isinstance(event, EventRaised)
            and self.status == CONTINUED_AS_NEW
            and self._continue_as_new is not None
            and self._continue_as_new[1]
            and not self._event_seen(event)
        )

    # --------------------------------------------------------- event processing

    def _apply(self, event: HistoryEvent, *, record: bool = False) -> None:
        if record:
            self._new.append(event)
        self.history_length += 1
        if self._suspended and not isinstance(
            event, ExecutionResumed | ExecutionTerminated | WorkflowTaskStarted | Command
        ):
            self._held.append(event)
            return
        match event:
            case WorkflowTaskStarted():
                self._check_no_pending(event)
                self._check_patches_checked(event)
                self.current_time = event.timestamp
                self._patches_recorded.update(event.patches)
                if self.is_replaying:
                    self._patches_due = set(event.patches)
                if not self._code_started:
                    self._start_code()
            case (
                TaskScheduled() | TimerCreated() | ChildWorkflowScheduled() | TaskCancelRequested()
            ):
                self._match_command(event)
            case ExecutionSuspended():
                self._suspended = True
            case ExecutionResumed():
                self._suspended = False
                held, self._held = self._held, []
                for held_event in held:
                    self.history_length -= 1
                    self._apply(held_event)
            case ExecutionTerminated():
                self._finish(TERMINATED, output=event.output)
            case ExecutionCompleted():
                if not self.is_complete:
                    self.status = event.status
                    self.output, self.failure = event.result, event.failure
            case EventRaised():
                self._deliver_event(event)
            case _:
                handler = self._handlers.pop(_completion_id(event), None)
                if handler is not None:
                    handler(event)
        self._resume()

    def _match_command(self, event: Command) -> None:
        """A command event in history must be the next command the code issued."""
        if not self._pending:
            raise NonDeterminismError(
                self.history_length - 1, describe(event), "no such call (the code did not issue it)"
            )
        issued = self._pending.popleft()
        same = type(issued) is type(event) and _command_key(issued) == _command_key(event)
        if not same:
            raise NonDeterminismError(self.history_length - 1, describe(event), describe(issued))
        if isinstance(event, TaskScheduled):
            # History is what was sent: an input given to this attempt from outside (a rerun
            # with a new input) stays the call's input, for its retries too.
            call = self._activity_calls.pop(event.task_id, None)
            if call is not None and bytes(call.input) != bytes(event.input):
                call.input = event.input

    def _check_no_pending(self, next_event: HistoryEvent | None) -> None:
        """At a task boundary every command issued during replay must be in history (unless
        calls past history are new: then they wait for their place in it, or become new)."""
        if self._rules.calls_past_history_are_new:
            return
        if self._pending and self.is_replaying:
            raise NonDeterminismError(
                self.history_length - (0 if next_event is None else 1),
                describe(next_event),
                describe(self._pending[0]),
            )

    def _check_patches_checked(self, next_event: HistoryEvent | None) -> None:
        """With ``patches_must_be_checked``: by the end of a replayed task, its code must have
        checked every patch that task recorded."""
        if not (self._rules.patches_must_be_checked and self.is_replaying):
            return
        unchecked = sorted(self._patches_due - set(self._patch_answers))
        self._patches_due = set()
        if unchecked and not self.is_complete:
            raise NonDeterminismError(
                self.history_length - (0 if next_event is None else 1),
                f"a check of patch {unchecked[0]!r} (is_patched), recorded in history",
                "no such check (the code no longer asks for the patch)",
            )

    def _flush_commands(self) -> None:
        """Commands issued by new code become new history events of this task."""
        while self._pending:
            command = self._pending.popleft()
            self._new.append(command)
            self.history_length += 1

    def _issue(self, command: Command) -> None:
        self._pending.append(command)

    def _next_id_value(self) -> int:
        self._next_id += 1
        return self._next_id

    # --------------------------------------------------------------- the code

    def _start_code(self) -> None:
        self._code_started = True
        definition = self.definition
        try:
            value = (
                definition.signature.input_of(
                    self.started.input, what=f"input of workflow '{self.workflow_name}'"
                )
                if definition.signature.takes_input
                else None
            )
            args = (self.ctx, value) if definition.signature.takes_input else (self.ctx,)
            produced = definition.fn(*args)
        except Exception as exc:
            self._fail(exc)
            return
        if inspect.iscoroutine(produced) or inspect.isgenerator(produced):
            self._code = produced
            self._step(None, None)
        else:
            self._complete(produced)

    def _step(self, value: Any, exc: BaseException | None) -> None:
        assert self._code is not None
        try:
            yielded = self._code.throw(exc) if exc is not None else self._code.send(value)
        except StopIteration as stop:
            self._complete(stop.value)
            return
        except NonDeterminismError:
            raise
        except Exception as error:
            self._fail(error)
            return
        if not isinstance(yielded, Task):
            raise NonDeterminismError(
                self.history_length,
                "an engine task (activity, timer, child workflow, event, when_all/when_any)",
                f"awaited {type(yielded).__name__}: {yielded!r}"[:200],
            )
        self._awaiting = yielded

    def _resume(self) -> None:
        while self._awaiting is not None and self._awaiting.is_complete and not self.is_complete:
            task, self._awaiting = self._awaiting, None
            error = task.get_exception()
            self._step(None if error is not None else task._result, error)

    def _complete(self, value: Any) -> None:
        self._code = None
        if self._continue_as_new is not None:
            self._finish_continue_as_new()
            return
        try:
            output = to_json(value)
        except TypeError as exc:
            self._fail(exc)
            return
        self._finish(COMPLETED, output=output)

    def _fail(self, exc: BaseException) -> None:
        self._code = None
        self._finish(FAILED, failure=failure_from(exc))

    def _finish(
        self,
        status: str,
        *,
        output: msgspec.Raw = NULL,
        failure: FailureDetails | None = None,
    ) -> None:
        if self.is_complete:
            return
        self.status, self.output, self.failure = status, output, failure
        self._awaiting = None
        if self._code is not None:
            self._code.close()
            self._code = None
        if not self.is_replaying:
            self._flush_commands()
            self._new.append(
                ExecutionCompleted(
                    timestamp=self.current_time, status=status, result=output, failure=failure
                )
            )

    def _finish_continue_as_new(self) -> None:
        assert self._continue_as_new is not None
        self._finish(CONTINUED_AS_NEW, output=self._continue_as_new[0])

    def _next_run(self, now: datetime) -> tuple[ExecutionStarted, list[EventRaised]]:
        assert self._continue_as_new is not None
        new_input, save_events = self._continue_as_new
        started = ExecutionStarted(
            timestamp=now,
            name=self.workflow_name,
            execution_id=str(self.ctx.new_uuid()),
            input=new_input,
            parent=self.started.parent,
            traceparent=self.started.traceparent,
            tracestate=self.started.tracestate,
            app_id=self.started.app_id,
        )
        carried: list[EventRaised] = []
        if save_events:
            for events in self._event_buffer.values():
                carried.extend(events)
            carried.extend(self._carried_late)
            # Events addressed to this run that arrive once the next one runs are its events;
            # those this run had already taken are duplicates there.
            started = msgspec.structs.replace(
                started,
                continued_from=self.execution_id,
                seen_event_ids=tuple(sorted(self._seen_event_ids - self._inherited_event_ids)),
            )
        return started, carried

    # ------------------------------------------------------ commands from code

    def schedule_activity(
        self,
        activity: Callable[..., Any] | str,
        input: Any,
        retry_policy: RetryPolicy | None,
        task_queue: str | None,
        timeout: timedelta | None,
        propagated: Any = None,
    ) -> Task[Any]:
        name, decode = self._callee(activity, kind="activity")
        if timeout is None and not isinstance(activity, str):
            registered = self._registered_activity_timeout(name)
            timeout = registered
        call = _ActivityCall(
            task=CompletableTask(),
            name=name,
            input=to_json(input),
            task_queue=check_name("task queue", task_queue or "default"),
            retry_policy=retry_policy,
            timeout=None if timeout is None else timeout.total_seconds(),
            decode=decode,
            propagated=to_json(propagated),
        )
        call.task.canceller = lambda: self._cancel_activity(call)
        self._schedule_attempt(call)
        return call.task

    def _registered_activity_timeout(self, name: str) -> timedelta | None:
        try:
            return self._registry.activity(name).start_to_close_timeout
        except LookupError:
            return None

    def _schedule_attempt(self, call: _ActivityCall) -> None:
        task_id = self._next_id_value()
        call.task_id, call.retry_timer_id = task_id, None
        self._activity_calls[task_id] = call
        if not call.task_execution_id:
            call.task_execution_id = f"{self.execution_id}:{task_id}"
            call.first_attempt_at = self.current_time
        self._issue(
            TaskScheduled(
                timestamp=self.current_time,
                task_id=task_id,
                name=call.name,
                input=call.input,
                task_queue=call.task_queue,
                attempt=call.attempt,
                task_execution_id=call.task_execution_id,
                start_to_close_timeout=call.timeout,
                propagated=call.propagated,
            )
        )

        self._handlers[task_id] = self._result_handler(
            call, "activity", lambda: self._schedule_attempt(call)
        )

    def _cancel_activity(self, call: _ActivityCall) -> None:
        """Cancel an activity call: a running attempt is told to stop (a command, so the
        worker hears of it), a back-off before the next attempt just ends."""
        if self._handlers.pop(call.task_id, None) is not None:
            self._issue(TaskCancelRequested(timestamp=self.current_time, task_id=call.task_id))
        elif call.retry_timer_id is not None:
            self._handlers.pop(call.retry_timer_id, None)
        call.task._set_exception(TaskCancelledError(f"activity '{call.name}' was cancelled"))

    def schedule_child(
        self,
        workflow: Callable[..., Any] | str,
        input: Any,
        instance_id: str | None,
        retry_policy: RetryPolicy | None,
        app_id: str | None = None,
        propagated: Any = None,
    ) -> Task[Any]:
        name, decode = self._callee(workflow, kind="workflow")
        if instance_id is not None:
            check_instance_id(instance_id)
        call = _ChildCall(
            task=CompletableTask(),
            name=name,
            instance_id=instance_id or "",
            input=to_json(input),
            retry_policy=retry_policy,
            decode=decode,
            app_id=self.app_id if app_id is None else app_token(app_id),
            propagated=to_json(propagated),
        )

        def stop_waiting() -> None:
            self._handlers.pop(call.task_id, None)
            if call.retry_timer_id is not None:
                self._handlers.pop(call.retry_timer_id, None)
            call.task._set_exception(
                TaskCancelledError(f"child workflow '{call.name}' is no longer waited for")
            )

        call.task.canceller = stop_waiting
        self._schedule_child_attempt(call)
        return call.task

    def _schedule_child_attempt(self, call: _ChildCall) -> None:
        task_id = self._next_id_value()
        call.task_id, call.retry_timer_id = task_id, None
        if call.first_attempt_at is None:
            call.first_attempt_at = self.current_time
        child_id = call.instance_id or f"{self.instance_id}-{task_id}"
        if call.attempt > 1:
            child_id = f"{call.instance_id or self.instance_id}-{task_id}"
        self._issue(
            ChildWorkflowScheduled(
                timestamp=self.current_time,
                task_id=task_id,
                name=call.name,
                instance_id=child_id,
                input=call.input,
                app_id=call.app_id,
                propagated=call.propagated,
            )
        )

        self._handlers[task_id] = self._result_handler(
            call, "child workflow", lambda: self._schedule_child_attempt(call)
        )

    def _result_handler(
        self, call: _ActivityCall | _ChildCall, kind: str, next_attempt: Callable[[], None]
    ) -> Callable[[HistoryEvent], None]:
        """What to do with an activity's or child's result: settle its task, or retry it
        after a durable back-off timer when its policy allows."""

        def on_result(event: HistoryEvent) -> None:
            self._activity_calls.pop(call.task_id, None)
            if isinstance(event, TaskCompleted | ChildWorkflowCompleted):
                self._settle(call.task, lambda: call.decode(event.result))
            elif isinstance(event, TaskFailed | ChildWorkflowFailed):
                policy = call.retry_policy
                if policy is not None and self._should_retry(
                    policy, call.attempt, call.first_attempt_at, event.failure
                ):
                    delay = policy.delay_after(call.attempt)
                    call.attempt += 1
                    call.retry_timer_id = self._after_timer(delay, next_attempt)
                else:
                    call.task._set_exception(failed_error(kind, call.name, event.failure))

        return on_result

    def schedule_timer(self, fire_at: datetime | timedelta) -> Task[None]:
        task: CompletableTask[None] = CompletableTask()
        timer_id = self._after_timer(fire_at, lambda: task._set_result(None))

        def stop_waiting() -> None:
            self._handlers.pop(timer_id, None)
            task._set_exception(TaskCancelledError("the timer was cancelled"))

        task.canceller = stop_waiting
        return task

    def _after_timer(self, fire_at: datetime | timedelta, then: Callable[[], None]) -> int:
        when = self.current_time + fire_at if isinstance(fire_at, timedelta) else fire_at
        if when.tzinfo is None:
            raise ValueError("create_timer needs a timezone-aware datetime (use UTC)")
        timer_id = self._next_id_value()
        self._issue(TimerCreated(timestamp=self.current_time, timer_id=timer_id, fire_at=when))
        self._handlers[timer_id] = lambda _event: then()
        return timer_id

    def wait_for_event(self, name: str, timeout: timedelta | None) -> Task[Any]:
        key = name.lower()
        task: CompletableTask[Any] = CompletableTask()
        buffered = self._event_buffer.get(key)
        if buffered:
            event = buffered.popleft()
            self._settle(task, lambda: from_json(event.data))
            return task
        waiters = self._event_waiters.setdefault(key, deque())
        waiters.append(task)
        timer_id: int | None = None
        if timeout is not None:

            def on_timeout() -> None:
                if not task.is_complete:
                    waiters.remove(task)
                    task._set_exception(
                        TimeoutError(f"external event {name!r} did not arrive within {timeout}")
                    )

            timer_id = self._after_timer(timeout, on_timeout)

        def stop_waiting() -> None:
            # A later event of that name is kept for the next wait instead.
            if task in waiters:
                waiters.remove(task)
            if timer_id is not None:
                self._handlers.pop(timer_id, None)
            task._set_exception(TaskCancelledError(f"the wait for {name!r} was cancelled"))

        task.canceller = stop_waiting
        return task

    def _deliver_event(self, event: EventRaised) -> None:
        if event.event_id:
            self._seen_event_ids.add(event.event_id)
        key = event.name.lower()
        waiters = self._event_waiters.get(key)
        if waiters:
            task = waiters.popleft()
            self._settle(task, lambda: from_json(event.data))
        else:
            self._event_buffer.setdefault(key, deque()).append(event)

    def request_continue_as_new(self, new_input: Any, save_events: bool) -> None:
        self._continue_as_new = (to_json(new_input), save_events)

    def is_patched(self, patch_name: str) -> bool:
        answer = self._patch_answers.get(patch_name)
        if answer is None:
            if patch_name in self._patches_recorded:
                answer = True
            elif not self.is_replaying:
                answer = True
                self._patches_recorded.add(patch_name)
                self._patches_new.append(patch_name)
            else:
                answer = False
            self._patch_answers[patch_name] = answer
        return answer

    # ----------------------------------------------------------------- helpers

    def _callee(
        self, target: Callable[..., Any] | str, *, kind: str
    ) -> tuple[str, Callable[[msgspec.Raw], Any]]:
        """The registered name of a function (or name) and the decoder of its output."""
        if isinstance(target, str):
            return target, lambda raw: from_json(raw)
        name = getattr(target, "__jetloom_name__", None) or target.__name__
        output_type = inspect_signature(target).output_type
        what = f"result of {kind} '{name}'"
        return name, lambda raw: from_json(raw, output_type, what=what)

    def _should_retry(
        self,
        policy: RetryPolicy | None,
        attempt: int,
        first_attempt_at: datetime | None,
        failure: FailureDetails,
    ) -> bool:
        if policy is None or failure.non_retryable or attempt >= policy.max_number_of_attempts:
            return False
        if not policy.is_retryable(failure.type):
            return False
        if policy.retry_timeout is not None and first_attempt_at is not None:
            next_start = self.current_time + policy.delay_after(attempt)
            if next_start - first_attempt_at > policy.retry_timeout:
                return False
        return True

    @staticmethod
    def _settle(task: CompletableTask[Any], get: Callable[[], Any]) -> None:
        try:
            task._set_result(get())
        except Exception as exc:
            task._set_exception(exc)


def _completion_id(event: HistoryEvent) -> int:
    if isinstance(event, TimerFired):
        return event.timer_id
    return getattr(event, "task_id", -1)


def _command_key(event: Command) -> tuple[Any, ...]:
    if isinstance(event, TaskScheduled | ChildWorkflowScheduled):
        return (event.task_id, event.name)
    if isinstance(event, TaskCancelRequested):
        return (event.task_id,)
    return (event.timer_id,)

