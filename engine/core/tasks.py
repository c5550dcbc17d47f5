"""Tasks: what workflow code awaits (async workflows) or yields (generator workflows)."""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import Any, Generic, TypeVar

from engine.core.errors import TaskCancelledError, TaskFailedError

T = TypeVar("T")
U = TypeVar("U")


class Task(Generic[T]):
    """A durable operation's eventual result: an activity, timer, child workflow or event.

    Awaitable in ``async def`` workflows and yieldable in generator workflows.
    """

    def __init__(self) -> None:
        self._complete = False
        self._result: Any = None
        self._exception: BaseException | None = None
        self._parents: list[CompositeTask[Any]] = []

    @property
    def is_complete(self) -> bool:
        """True once the task has a result or an exception."""
        return self._complete

    @property
    def is_failed(self) -> bool:
        """True if the task completed with an exception."""
        return self._exception is not None

    def get_result(self) -> T:
        """The result; raises the task's exception if it failed."""
        if not self._complete:
            raise RuntimeError("the task has not completed yet")
        if self._exception is not None:
            raise self._exception
        return self._result  # type: ignore[no-any-return]

    def get_exception(self) -> BaseException | None:
        """The exception of a failed task, else None."""
        return self._exception

    @classmethod
    def completed(cls, result: T) -> Task[T]:
        """A task that is already complete with ``result``."""
        task: Task[T] = cls()
        task._set_result(result)
        return task

    @classmethod
    def failed(cls, error: BaseException) -> Task[Any]:
        """A task that has already failed with ``error``."""
        task: Task[Any] = cls()
        task._set_exception(error)
        return task

    def derive(
        self,
        *,
        result: Callable[[T], U] | None = None,
        failure: Callable[[BaseException], BaseException] | None = None,
    ) -> Task[U]:
        """A task that completes when this one does: with its result passed through
        ``result``, or failed with its exception passed through ``failure`` (a map that
        raises fails the derived task with that error). For adapters such as ``engine.dapr``
        that give workflow code their own values and errors."""
        return _DerivedTask(self, result, failure)

    def cancel(self) -> None:
        """Cancel the task unless it has finished; awaiting it then raises
        ``TaskCancelledError``.

        An activity's worker is told to stop it (an ``async def`` activity gets
        ``asyncio.CancelledError`` at its next ``await``, a plain ``def`` sees
        ``ctx.is_cancelled``), and a result that still comes is dropped. A timer, an
        external-event wait or a child workflow is no longer waited for (the child keeps
        running: terminate it with the client). ``when_all``/``when_any`` cancel their
        unfinished tasks. Deterministic: a replay cancels at the same point.
        """
        if not self._complete:
            self._cancel()

    def _cancel(self) -> None:
        self._set_exception(TaskCancelledError("the task was cancelled"))

    def __await__(self) -> Generator[Task[T], Any, T]:
        # The executor drives the coroutine: it sends the result back or throws the exception.
        result = yield self
        return result  # type: ignore[no-any-return]

    # -- completion (called by the executor only) --

    def _set_result(self, result: Any) -> None:
        if self._complete:
            return
        self._complete, self._result = True, result
        self._notify()

    def _set_exception(self, exc: BaseException) -> None:
        if self._complete:
            return
        self._complete, self._exception = True, exc
        self._notify()

    def _notify(self) -> None:
        for parent in self._parents:
            parent._on_child_completed(self)


class CompletableTask(Task[T]):
    """A task completed by a history event (activity, timer, child workflow, external event).

    ``canceller`` (set by the executor) stops what the task waits for and fails it with
    ``TaskCancelledError``.
    """

    def __init__(self, canceller: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.canceller = canceller

    def _cancel(self) -> None:
        if self.canceller is None:
            super()._cancel()
        else:
            self.canceller()


class CompositeTask(Task[T]):
    """A task built of other tasks."""

    def __init__(self, tasks: Sequence[Task[Any]]) -> None:
        super().__init__()
        self._tasks = list(tasks)
        for task in self._tasks:
            if not isinstance(task, Task):
                raise TypeError(f"when_all/when_any take engine tasks, got {type(task).__name__}")
            task._parents.append(self)
        for task in self._tasks:
            if task.is_complete:
                self._on_child_completed(task)

    def _on_child_completed(self, task: Task[Any]) -> None:
        raise NotImplementedError

    def _cancel(self) -> None:
        for task in self._tasks:
            task.cancel()


class _DerivedTask(CompositeTask[U]):
    """``Task.derive``: one source task, its outcome mapped."""

    def __init__(
        self,
        source: Task[Any],
        result: Callable[[Any], U] | None,
        failure: Callable[[BaseException], BaseException] | None,
    ) -> None:
        self._map_result = result
        self._map_failure = failure
        super().__init__([source])

    def _on_child_completed(self, task: Task[Any]) -> None:
        if self._complete:
            return
        error = task.get_exception()
        try:
            if error is None:
                value = task._result
                self._set_result(value if self._map_result is None else self._map_result(value))
            elif self._map_failure is None:
                self._set_exception(error)
            else:
                self._set_exception(self._map_failure(error))
        except Exception as mapped_error:
            self._set_exception(mapped_error)


class WhenAllTask(CompositeTask[list[Any]]):
    """Completes when every task has; fails with the first failure once all have finished."""

    def __init__(self, tasks: Sequence[Task[Any]]) -> None:
        super().__init__(tasks)
        if not self._tasks:
            self._set_result([])

    def _on_child_completed(self, task: Task[Any]) -> None:
        if self._complete or not all(t.is_complete for t in self._tasks):
            return
        failed = next((t for t in self._tasks if t.is_failed), None)
        if failed is not None:
            self._set_exception(failed._exception)  # type: ignore[arg-type]
        else:
            self._set_result([t._result for t in self._tasks])


class WhenAnyTask(CompositeTask[Task[Any]]):
    """Completes with the first of its tasks to finish (successfully or not); with
    ``cancel_losers``, the others are cancelled then."""

    def __init__(self, tasks: Sequence[Task[Any]], *, cancel_losers: bool = False) -> None:
        if not tasks:
            raise ValueError("when_any needs at least one task")
        self._cancel_losers = cancel_losers
        super().__init__(tasks)

    def _on_child_completed(self, task: Task[Any]) -> None:
        if self._complete:
            return
        self._set_result(task)
        if self._cancel_losers:
            for loser in self._tasks:
                if loser is not task:
                    loser.cancel()


def when_all(tasks: Sequence[Task[T]]) -> Task[list[T]]:
    """A task whose result is the list of the tasks' results, in order.

    Raises the first failure (in task order) once every task has finished.
    """
    return WhenAllTask(tasks)


def when_any(tasks: Sequence[Task[Any]], *, cancel_losers: bool = False) -> Task[Task[Any]]:
    """A task whose result is the first of ``tasks`` to finish.

    The others go on unless ``cancel_losers``: then each is cancelled (``Task.cancel()``) as
    soon as the first has finished, so activities that lost the race are stopped.
    """
    return WhenAnyTask(tasks, cancel_losers=cancel_losers)


def failed_error(kind: str, name: str, failure: Any) -> TaskFailedError:
    """The TaskFailedError raised in a workflow for a failed activity or child workflow."""
    return TaskFailedError(f"{kind} '{name}' failed: {failure.type}: {failure.message}", failure)
