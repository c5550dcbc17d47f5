"""WorkflowRuntime: registration and lifecycle of a worker; its pipelines do the work."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any, TypeVar, overload

import structlog

from brokers import (
    DEFAULT_THRESHOLD,
    MIN_THRESHOLD,
    JetStreamBroker,
    Subjects,
    WorkerHeartbeat,
    connect_nats,
    watch_sourcing,
)
from engine.core.registry import Registry
from engine.core.retention import RetentionPolicy
from engine.signals import stop_signal
from engine.worker.activities import ActivityContext, ActivityPipeline
from engine.worker.history_cache import HistoryCache
from engine.worker.projection import RecordProjector
from engine.worker.work_items import WorkReader
from engine.worker.workflow_task import WorkflowTasks
from engine.worker.workflows import WorkflowPipeline
from observability import watch_consumers

__all__ = ["ActivityContext", "WorkflowRuntime"]

F = TypeVar("F", bound=Callable[..., Any])

log = structlog.get_logger("jetloom.runtime")

LOOP_STOP_TIMEOUT = 5.0
"""Seconds ``shutdown`` waits for the runtime's loops to stop once cancelled."""


class WorkflowRuntime:
    """Hosts workflows and/or activities and runs them from JetStream.

    Many processes may host the same workflows and activities: they share durable consumers and
    compete for work. Limits hold per runtime: it never holds more unfinished workflow tasks or
    activities than ``max_concurrent_workflow_tasks`` / ``max_concurrent_activities``.
    """

    def __init__(
        self,
        nats_url: str | None = None,
        *,
        max_concurrent_workflow_tasks: int = 100,
        max_concurrent_activities: int = 100,
        task_queues: list[str] | None = None,
        prefix: str | None = None,
        activity_lease: timedelta = timedelta(seconds=30),
        workflow_task_lease: timedelta = timedelta(seconds=30),
        replicas: int = 1,
        history_cache_size: int = 10_000,
        stall_retry_max: timedelta = timedelta(seconds=30),
        connect_options: dict[str, Any] | None = None,
        large_payload_threshold: int = DEFAULT_THRESHOLD,
        retention: RetentionPolicy | None = None,
        dispatch_ttl: timedelta = timedelta(hours=24),
    ) -> None:
        """Configure a runtime; nothing connects until ``start()``.

        Args:
            nats_url: server URL(s), comma separated; default NATS_URL, then 127.0.0.1:4222.
            max_concurrent_workflow_tasks: workflow work items held at once.
            max_concurrent_activities: activities running at once.
            task_queues: activity task queues served (default ``["default"]``).
            prefix: namespace of subjects, streams and buckets (default JETLOOM_PREFIX, then
                ``jetloom``).
            activity_lease: how long a running activity's message stays with this worker
                without a heartbeat (the runtime heartbeats while the activity runs).
            workflow_task_lease: how long a workflow work item stays with a worker that took
                it; after a crash, another worker gets it once this has passed.
            replicas: stream replicas (3 on a cluster).
            history_cache_size: instances whose history is kept in memory between tasks.
            stall_retry_max: longest wait before a failing workflow task is retried.
            connect_options: extra ``nats.connect`` options, e.g. credentials and TLS from
                ``brokers.NatsAuth(...).connect_options()`` (else NATS_CREDS, NATS_CA, ...).
            large_payload_threshold: inputs, outputs and event data whose JSON is larger than
                this many bytes are kept in the Object Store bucket ``<prefix>_payloads`` and
                referenced from history (default 256 KiB; at least 1 KiB).
            retention: how long instances are kept once they finished; each is purged (as
                ``purge_workflow`` does) when its time has passed, by a message schedule set
                with its last workflow task. Applies to instances that finish after it is set
                (default: kept until purged by hand).
            dispatch_ttl: how long the copies of dispatches (activity tasks, work items,
                cancel requests) stay in the history stream once written: the work stream
                takes them in at once, the copies only cover an outage of it. Their storage is
                about this times the rate of dispatches (at least one second).
        """
        if max_concurrent_workflow_tasks < 1 or max_concurrent_activities < 1:
            raise ValueError("concurrency limits must be at least 1")
        if dispatch_ttl < timedelta(seconds=1):
            raise ValueError(f"dispatch_ttl must be at least one second, got {dispatch_ttl}")
        if large_payload_threshold < MIN_THRESHOLD:
            raise ValueError(
                f"large_payload_threshold must be at least {MIN_THRESHOLD} bytes, "
                f"got {large_payload_threshold}"
            )
        self.large_payload_threshold = large_payload_threshold
        self.nats_url = nats_url
        self.max_concurrent_workflow_tasks = max_concurrent_workflow_tasks
        self.max_concurrent_activities = max_concurrent_activities
        self.task_queues = list(task_queues or ["default"])
        self.subjects = Subjects.of(prefix)
        self.activity_lease = activity_lease
        self.workflow_task_lease = workflow_task_lease
        self.replicas = replicas
        self.stall_retry_max = stall_retry_max
        self.connect_options = dict(connect_options or {})
        self.registry = Registry()
        self.history_cache_size = history_cache_size
        self.retention = retention
        self.dispatch_ttl = dispatch_ttl
        self._broker: JetStreamBroker | None = None
        self._loops: list[asyncio.Task[None]] = []
        self._inflight: set[asyncio.Task[Any]] = set()
        self.workflow_pipeline: WorkflowPipeline | None = None
        """Serving workflow tasks (once started, if the runtime hosts workflows)."""
        self.activity_pipeline: ActivityPipeline | None = None
        """Serving activities (once started, if the runtime hosts activities)."""
        self._started = False

    # ------------------------------------------------------------ registration

    def register_workflow(self, fn: F, *, name: str | None = None) -> F:
        """Host ``fn`` as a workflow (name defaults to the function's name)."""
        definition = self.registry.add_workflow(fn, name=name)
        fn.__jetloom_name__ = definition.name  # type: ignore[attr-defined]
        return fn

    def register_activity(
        self, fn: F, *, name: str | None = None, start_to_close_timeout: timedelta | None = None
    ) -> F:
        """Host ``fn`` as an activity (plain ``def`` runs in a thread pool)."""
        definition = self.registry.add_activity(
            fn, name=name, start_to_close_timeout=start_to_close_timeout
        )
        fn.__jetloom_name__ = definition.name  # type: ignore[attr-defined]
        return fn

    @overload
    def workflow(self, fn: F, *, name: str | None = None) -> F: ...

    @overload
    def workflow(self, fn: None = None, *, name: str | None = None) -> Callable[[F], F]: ...

    def workflow(
        self, fn: F | None = None, *, name: str | None = None
    ) -> F | Callable[[F], F]:
        """Decorator: ``@wfr.workflow`` or ``@wfr.workflow(name="...")``."""
        if fn is not None:
            return self.register_workflow(fn, name=name)

        def register(f: F) -> F:
            return self.register_workflow(f, name=name)

        return register

    @overload
    def activity(
        self, fn: F, *, name: str | None = None, start_to_close_timeout: timedelta | None = None
    ) -> F: ...

    @overload
    def activity(
        self,
        fn: None = None,
        *,
        name: str | None = None,
        start_to_close_timeout: timedelta | None = None,
    ) -> Callable[[F], F]: ...

    def activity(
        self,
        fn: F | None = None,
        *,
        name: str | None = None,
        start_to_close_timeout: timedelta | None = None,
    ) -> F | Callable[[F], F]:
        """Decorator: ``@wfr.activity`` or ``@wfr.activity(name=..., start_to_close_timeout=...)``.

        The timeout limits one attempt unless the call sets its own.
        """
        if fn is not None:
            return self.register_activity(
                fn, name=name, start_to_close_timeout=start_to_close_timeout
            )

        def register(f: F) -> F:
            return self.register_activity(
                f, name=name, start_to_close_timeout=start_to_close_timeout
            )

        return register

    def versioned_workflow(self, *, name: str, is_latest: bool = False) -> Callable[[F], F]:
        """Decorator registering one version (the function's name) of workflow ``name``.

        New instances run the latest version; a running instance keeps the version it started
        with, recorded in its history.
        """

        def register(fn: F) -> F:
            self.registry.add_workflow(fn, name=name, version=fn.__name__, is_latest=is_latest)
            fn.__jetloom_name__ = name  # type: ignore[attr-defined]
            return fn

        return register

    # --------------------------------------------------------------- lifecycle

    @property
    def broker(self) -> JetStreamBroker:
        """The JetStream binding (after start)."""
        if self._broker is None:
            raise RuntimeError("the runtime is not started: call 'await runtime.start()'")
        return self._broker

    async def start(self) -> None:
        """Connect, create the streams if needed and start taking work."""
        if self._started:
            return
        _tune_gc()
        if not structlog.is_configured():
            # structlog's own default prints every level; a worker logs at INFO (or
            # JETLOOM_LOG_LEVEL) unless the process configured logging itself. Only the level
            # changes: the lines look as structlog's default makes them.
            level = os.environ.get("JETLOOM_LOG_LEVEL", "INFO").upper()
            structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(
                logging.getLevelNamesMapping().get(level, logging.INFO)
            ))
        nc = await connect_nats(self.nats_url, **self.connect_options)
        broker = self._broker = JetStreamBroker(
            nc, self.subjects, replicas=self.replicas,
            large_payload_threshold=self.large_payload_threshold,
            outbox_ttl=f"{int(self.dispatch_ttl.total_seconds())}s",
        )
        await broker.ensure_topology()
        # Acknowledgements are confirmed only where a consumer leader can change under a live
        # connection (see brokers.WorkMessage.settle).
        work_stream = await broker.work_stream_layout()
        confirm_acks = work_stream.replicas > 1
        s = self.subjects
        watched: list[str] = []
        if self.registry.workflow_names:
            await broker.ensure_consumer(
                s.workflows_consumer, work_stream.workflow_filters,
                ack_wait=self.workflow_task_lease.total_seconds(), max_ack_pending=100_000,
            )
            self.workflow_pipeline = self._workflow_pipeline(broker, confirm_acks)
            self._loops.append(asyncio.create_task(self.workflow_pipeline.serve()))
            watched.append(s.workflows_consumer)
        if self.registry.activity_names:
            self.activity_pipeline = ActivityPipeline(
                broker, self.registry, capacity=self.max_concurrent_activities,
                lease=self.activity_lease, confirm_acks=confirm_acks, spawn=self._spawn,
            )
            await self.activity_pipeline.start()  # hears cancel requests from now on
            for queue in self.task_queues:
                await broker.ensure_consumer(
                    s.activities_consumer(queue), [s.outbox_activity(queue)],
                    ack_wait=self.activity_lease.total_seconds(), max_ack_pending=100_000,
                )
                self._loops.append(asyncio.create_task(
                    self.activity_pipeline.serve(queue, len(self.task_queues))
                ))
                watched.append(s.activities_consumer(queue))
        # On a cluster, restart a stalled source of dispatches (see brokers._sourcing).
        self._loops.append(asyncio.create_task(
            watch_sourcing(broker.api, s.work_stream, s.history_stream)
        ))
        # observability: backlog gauges (returns at once unless metrics are configured)
        self._loops.append(asyncio.create_task(watch_consumers(
            lambda c: broker.js.consumer_info(s.work_stream, c), s.work_stream, watched
        )))
        self._loops.append(asyncio.create_task(WorkerHeartbeat(  # who is alive: <p>_workers
            broker, workflows=self.registry.workflow_names,
            activities=self.registry.activity_names, task_queues=self.task_queues,
        ).run()))
        self._started = True
        log.info(
            "runtime.started",
            workflows=self.registry.workflow_names,
            activities=self.registry.activity_names,
            task_queues=self.task_queues,
        )

    def _workflow_pipeline(self, broker: JetStreamBroker, confirm_acks: bool) -> WorkflowPipeline:
        projector = RecordProjector(broker)
        reader = WorkReader(self.subjects, self.registry)
        tasks = WorkflowTasks(
            broker, self.registry, HistoryCache(self.history_cache_size), projector, reader,
            self.retention,
        )
        return WorkflowPipeline(
            broker, tasks, projector, reader,
            capacity=self.max_concurrent_workflow_tasks,
            stall_retry_max=self.stall_retry_max,
            confirm_acks=confirm_acks,
            spawn=self._spawn,
        )

    async def shutdown(self, timeout: float = 30.0) -> None:
        """Stop taking work, let in-flight work finish (up to ``timeout``), disconnect."""
        if not self._started:
            return
        for pipeline in (self.workflow_pipeline, self.activity_pipeline):
            if pipeline is not None:
                pipeline.stopping = True
        for loop in self._loops:
            loop.cancel()
        if self._loops:  # a loop that swallows its cancellation must not hold up the exit
            await asyncio.wait(self._loops, timeout=LOOP_STOP_TIMEOUT)
        self._loops.clear()
        if self._inflight:
            await asyncio.wait(self._inflight, timeout=timeout)
        if self.activity_pipeline is not None:
            await self.activity_pipeline.stop()
        if self._broker is not None:
            with contextlib.suppress(Exception):
                await self._broker.nc.flush(timeout=5)
            with contextlib.suppress(Exception):
                await self._broker.nc.close()
        self._started = False
        log.info("runtime.stopped")

    async def run(self) -> None:
        """Start, then serve until cancelled, SIGTERM or SIGINT; shut down gracefully."""
        with stop_signal() as stop:
            try:
                await self.start()
                await stop.wait()
            finally:
                await self.shutdown()

    async def __aenter__(self) -> WorkflowRuntime:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)


def _tune_gc() -> None:
    """Keep the collector off the hot path of a long-running worker.

    Everything loaded so far (modules, registry, code) is moved out of the collector's sight,
    and the young generation may grow larger before a collection: a worker allocates many
    short-lived messages and events, and the default threshold (700) makes it collect every
    few tasks. Thresholds are only ever raised.
    """
    gc.collect()
    gc.freeze()
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(young, 50_000), max(middle, 20), max(old, 20))
