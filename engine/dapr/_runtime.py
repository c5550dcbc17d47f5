"""Dapr's ``WorkflowRuntime``: synchronous start/shutdown, serving from a thread of its own.

Underneath is an engine ``WorkflowRuntime`` running on a private event loop. Dapr's functions
are registered with the engine through entry functions that speak Dapr on the inside (its
contexts, payload encoding, input models) and the engine's payloads on the outside.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import threading
from collections.abc import Callable, Coroutine, Generator
from dataclasses import dataclass
from typing import Any

import structlog

import engine
from engine.dapr._context import (
    ActivityContext,
    DaprWorkflowContext,
    WorkflowActivityContext,
    own_app_id,
    task_queue_of,
)
from engine.dapr._loop import LoopThread
from engine.dapr._payload import encode, input_model_of, input_value
from engine.dapr._propagation import received_history

log = structlog.get_logger("jetloom.dapr")

_DEFAULT_READY_TIMEOUT = 30.0
"""Seconds ``start()`` waits for the worker to connect (Dapr's ``worker_ready_timeout``)."""


def is_async_callable(fn: Any) -> bool:
    """True if ``fn`` is async, seen through partials and wrapping decorators (as in Dapr)."""
    candidate = fn
    while isinstance(candidate, functools.partial):
        candidate = candidate.func
    if callable(candidate):
        with contextlib.suppress(ValueError):
            candidate = inspect.unwrap(candidate)
    if inspect.iscoroutinefunction(candidate):
        return True
    if not inspect.isfunction(candidate) and callable(candidate):
        return inspect.iscoroutinefunction(candidate.__call__)
    return False


def _encoded_generator(workflow: Generator[Any, Any, Any]) -> Generator[Any, Any, Any]:
    """Drive a generator workflow and give its return value Dapr's encoding."""
    result = yield from workflow
    return encode(result)


async def _encoded_coroutine(workflow: Coroutine[Any, Any, Any]) -> Any:
    """Drive an async workflow and give its return value Dapr's encoding."""
    return encode(await workflow)


def workflow_entry(fn: Callable[..., Any], name: str, app_id: str) -> Callable[..., Any]:
    """The engine-facing function of Dapr workflow ``fn``, run by application ``app_id``."""
    takes_input, model = input_model_of(fn)

    def entry(ctx: engine.WorkflowContext, input: Any = None) -> Any:
        dapr_ctx = DaprWorkflowContext(
            ctx, app_id=app_id, propagated_history=received_history(ctx.propagated_history)
        )
        produced = fn(dapr_ctx, input_value(input, model)) if takes_input else fn(dapr_ctx)
        if inspect.isgenerator(produced):
            return _encoded_generator(produced)
        if inspect.iscoroutine(produced):
            return _encoded_coroutine(produced)
        return encode(produced)

    entry.__name__ = entry.__qualname__ = f"dapr_workflow_{name}"
    return entry


def activity_entry(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    """The engine-facing function of Dapr activity ``fn`` (async if ``fn`` is)."""
    takes_input, model = input_model_of(fn)

    def arguments(ctx: engine.ActivityContext, input: Any) -> tuple[Any, ...]:
        propagated = received_history(ctx.propagated_history)
        activity_ctx = WorkflowActivityContext(ActivityContext(ctx, propagated))
        return (activity_ctx, input_value(input, model)) if takes_input else (activity_ctx,)

    entry: Callable[..., Any]
    if is_async_callable(fn):

        async def async_entry(ctx: engine.ActivityContext, input: Any = None) -> Any:
            return encode(await fn(*arguments(ctx, input)))

        entry = async_entry
    else:

        def sync_entry(ctx: engine.ActivityContext, input: Any = None) -> Any:
            return encode(fn(*arguments(ctx, input)))

        entry = sync_entry
    entry.__name__ = entry.__qualname__ = f"dapr_activity_{name}"
    return entry


@dataclass(frozen=True)
class _Registration:
    """One registered workflow (version) or activity, as the engine takes it."""

    kind: str  # "workflow" or "activity"
    entry: Callable[..., Any]
    name: str
    version: str | None = None
    is_latest: bool = True

    def add_to(self, native: engine.WorkflowRuntime) -> None:
        if self.kind == "activity":
            native.register_activity(self.entry, name=self.name)
        elif self.version is None:
            native.register_workflow(self.entry, name=self.name)
        else:
            native.register_versioned_workflow(
                self.entry, name=self.name, version_name=self.version, is_latest=self.is_latest
            )


def _decorated(fn: Any, name: str) -> Callable[[], Any]:
    """What Dapr's decorators return: a function returning ``fn``, carrying its name."""

    @functools.wraps(fn)
    def innerfn() -> Any:
        return fn

    innerfn.__dict__["_dapr_alternate_name"] = fn.__dict__.get("_dapr_alternate_name", name)
    innerfn.__signature__ = inspect.signature(fn)  # type: ignore[attr-defined]
    return innerfn


class WorkflowRuntime:
    """WorkflowRuntime is the entry point for registering workflows and activities.

    ``start()`` connects to NATS (``NATS_URL``) and serves from a background thread;
    ``shutdown()`` finishes in-flight work and disconnects. The process's application id
    comes from ``APP_ID``: its activities are served on that application's task queue.
    """

    def __init__(
        self,
        host: str | None = None,
        port: str | None = None,
        logger_options: Any = None,
        interceptors: Any = None,
        maximum_concurrent_activity_work_items: int | None = None,
        maximum_concurrent_orchestration_work_items: int | None = None,
        maximum_thread_pool_workers: int | None = None,
        worker_ready_timeout: float | None = None,
        max_grpc_message_length: int | None = None,
        disable_stateful_history: bool = False,
        history_cache_ttl: float | None = None,
        history_cache_max_instances: int | None = None,
        history_cache_max_bytes: int | None = None,
        *,
        nats_url: str | None = None,
        prefix: str | None = None,
    ) -> None:
        """Initializes the workflow runtime; nothing connects until ``start()``.

        Dapr's sidecar settings (``host``, ``port``, ``interceptors``,
        ``max_grpc_message_length``, ``history_cache_ttl``, ``history_cache_max_bytes``)
        are accepted and have no effect: there is no sidecar.

        Args:
            maximum_concurrent_activity_work_items: activities running at once.
            maximum_concurrent_orchestration_work_items: workflow tasks held at once.
            maximum_thread_pool_workers: threads running plain ``def`` activities.
            worker_ready_timeout: seconds ``start()`` waits to be connected (default 30).
            disable_stateful_history: keep no history between workflow tasks.
            history_cache_max_instances: instances whose history is kept between tasks.
            nats_url: the NATS server(s); default ``NATS_URL``, then 127.0.0.1:4222.
            prefix: the jetloom namespace; default ``JETLOOM_PREFIX``, then ``jetloom``.
        """
        self._app_id = own_app_id()
        self._settings: dict[str, Any] = {
            "nats_url": nats_url,
            "prefix": prefix,
            "app_id": self._app_id,
            "task_queues": [task_queue_of(self._app_id)],
            # Dapr replays the code from history on every task, lets replayed code issue
            # calls history does not show yet, and stalls code that dropped a patch check.
            "replay_rules": engine.ReplayRules.dapr(),
        }
        if maximum_concurrent_activity_work_items is not None:
            self._settings["max_concurrent_activities"] = maximum_concurrent_activity_work_items
        if maximum_concurrent_orchestration_work_items is not None:
            self._settings["max_concurrent_workflow_tasks"] = (
                maximum_concurrent_orchestration_work_items
            )
        if disable_stateful_history:
            self._settings["history_cache_size"] = 0
        elif history_cache_max_instances:
            self._settings["history_cache_size"] = history_cache_max_instances
        self._thread_pool_workers = maximum_thread_pool_workers
        self._ready_timeout = (
            _DEFAULT_READY_TIMEOUT if worker_ready_timeout is None else worker_ready_timeout
        )
        self._lock = threading.RLock()
        self._registrations: list[_Registration] = []
        self._native = engine.WorkflowRuntime(**self._settings)
        self._loop: LoopThread | None = None

    # ---------------------------------------------------------------------- registration

    def register_workflow(self, fn: Callable[..., Any], *, name: str | None = None) -> None:
        """Register workflow ``fn`` under ``name`` (default: its alternate name or __name__).

        Raises:
            ValueError: ``fn`` is already registered, or has an alternate name and ``name`` is
                given too.
        """
        alternate = self._claim_name(fn, name, "Workflow", "_workflow_registered")
        entry = workflow_entry(fn, alternate, self._app_id)
        self._register(_Registration("workflow", entry, alternate))
        fn.__dict__["_workflow_registered"] = True

    def register_versioned_workflow(
        self,
        fn: Callable[..., Any],
        *,
        name: str,
        version_name: str | None = None,
        is_latest: bool,
    ) -> None:
        """Register ``fn`` as version ``version_name`` (default: its __name__) of ``name``.

        New instances run the latest version; a running instance keeps the version it
        started with.
        """
        alternate = self._claim_name(fn, name, "Workflow", "_workflow_registered")
        version = version_name if version_name is not None else fn.__name__
        self._register(_Registration(
            "workflow", workflow_entry(fn, alternate, self._app_id), alternate, version, is_latest
        ))
        fn.__dict__["_workflow_registered"] = True

    def register_activity(self, fn: Callable[..., Any], *, name: str | None = None) -> None:
        """Register a workflow activity. ``def`` and ``async def`` are both supported:
        async activities run on the runtime's event loop, plain ones in its thread pool."""
        alternate = self._claim_name(fn, name, "Activity", "_activity_registered")
        self._register(_Registration("activity", activity_entry(fn, alternate), alternate))
        fn.__dict__["_activity_registered"] = True

    @staticmethod
    def _claim_name(fn: Any, name: str | None, kind: str, registered_flag: str) -> str:
        """Dapr's naming rules: a function registers once, under one alternate name."""
        if hasattr(fn, registered_flag):
            alternate = fn.__dict__["_dapr_alternate_name"]
            raise ValueError(f"{kind} {fn.__name__} already registered as {alternate}")
        if hasattr(fn, "_dapr_alternate_name"):
            if name is not None:
                raise ValueError(
                    f"{kind} {fn.__name__} already has an alternate name {fn._dapr_alternate_name}"
                )
            return str(fn._dapr_alternate_name)
        fn.__dict__["_dapr_alternate_name"] = name if name else fn.__name__
        return str(fn.__dict__["_dapr_alternate_name"])

    def _register(self, registration: _Registration) -> None:
        with self._lock:
            self._registrations.append(registration)
            if self._loop is None:
                registration.add_to(self._native)
            else:
                # On the runtime's loop: the engine starts serving a kind registered late.
                self._loop.run(_call(registration.add_to, self._native))

    def _new_native(self) -> engine.WorkflowRuntime:
        native = engine.WorkflowRuntime(**self._settings)
        for registration in self._registrations:
            registration.add_to(native)
        return native

    # -------------------------------------------------------------------------- lifecycle

    def wait_for_worker_ready(self, timeout: float = 30.0) -> bool:
        """True once the runtime is connected and taking work (``start()`` waits for it)."""
        return self._loop is not None

    def start(self) -> None:
        """Connect and start taking work on a background thread; returns once connected.

        Raises:
            RuntimeError: the runtime did not connect within ``worker_ready_timeout``.
        """
        with self._lock:
            if self._loop is not None:
                return
            loop = LoopThread("dapr-workflow-runtime", max_workers=self._thread_pool_workers)
            try:
                loop.run(self._native.start(), self._ready_timeout)
            except TimeoutError:
                loop.stop()
                raise RuntimeError(
                    f"WorkflowRuntime worker and its stream are not ready: no NATS connection "
                    f"within {self._ready_timeout}s; check NATS_URL"
                ) from None
            except BaseException:
                loop.stop()
                raise
            self._loop = loop

    def shutdown(self) -> None:
        """Stop taking work, let in-flight work finish, disconnect and stop the thread."""
        with self._lock:
            loop, self._loop = self._loop, None
            if loop is None:
                return
            try:
                loop.run(self._native.shutdown())
            finally:
                loop.stop()
                # A runtime starts once: a later start() gets a fresh one.
                self._native = self._new_native()

    # ------------------------------------------------------------------------ decorators

    def versioned_workflow(
        self,
        __fn: Callable[..., Any] | None = None,
        *,
        name: str,
        version_name: str | None = None,
        is_latest: bool,
    ) -> Any:
        """Decorator registering one version of workflow ``name``."""

        def wrapper(fn: Callable[..., Any]) -> Callable[[], Any]:
            self.register_versioned_workflow(
                fn, name=name, version_name=version_name, is_latest=is_latest
            )
            return _decorated(fn, name)

        if __fn:
            return wrapper(__fn)
        return wrapper

    def workflow(self, __fn: Callable[..., Any] | None = None, *, name: str | None = None) -> Any:
        """Decorator registering a workflow function: ``@wfr.workflow`` or
        ``@wfr.workflow(name="...")``."""

        def wrapper(fn: Callable[..., Any]) -> Callable[[], Any]:
            self.register_workflow(fn, name=name)
            return _decorated(fn, name if name else fn.__name__)

        if __fn:
            return wrapper(__fn)
        return wrapper

    def activity(self, __fn: Callable[..., Any] | None = None, *, name: str | None = None) -> Any:
        """Decorator registering an activity function: ``@wfr.activity`` or
        ``@wfr.activity(name="...")``."""

        def wrapper(fn: Callable[..., Any]) -> Callable[[], Any]:
            self.register_activity(fn, name=name)
            return _decorated(fn, name if name else fn.__name__)

        if __fn:
            return wrapper(__fn)
        return wrapper


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn`` on the runtime's loop (so the engine's registry changes in its thread)."""
    return fn(*args)


def alternate_name(name: str | None = None) -> Callable[[Any], Any]:
    """Decorator giving a workflow or activity function the name it is registered under."""

    def wrapper(fn: Any) -> Any:
        if hasattr(fn, "_dapr_alternate_name"):
            raise ValueError(
                f"Function {fn.__name__} already has an alternate name {fn._dapr_alternate_name}"
            )
        fn.__dict__["_dapr_alternate_name"] = name if name else fn.__name__
        innerfn: Any
        if is_async_callable(fn):

            @functools.wraps(fn)
            async def async_innerfn(*args: Any, **kwargs: Any) -> Any:
                return await fn(*args, **kwargs)

            innerfn = async_innerfn
        else:

            @functools.wraps(fn)
            def sync_innerfn(*args: Any, **kwargs: Any) -> Any:
                return fn(*args, **kwargs)

            innerfn = sync_innerfn
        innerfn.__dict__["_dapr_alternate_name"] = name if name else fn.__name__
        innerfn.__signature__ = inspect.signature(fn)
        return innerfn

    return wrapper
