"""WorkflowRuntime: registration and lifecycle of a worker; its pipelines do the work."""

from __future__ import annotations

import asyncio
import contextlib
import gc
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
    WorkStreamLayout,
    app_id_or_default,
    connect_nats,
    stop_tasks,
    watch_sourcing,
)
from engine.core.executor import ReplayRules
from engine.core.instance_ids import app_token
from engine.core.registry import Registry, check_name
from engine.core.retention import RetentionPolicy
from engine.signals import stop_signal
from engine.worker.activities import ActivityContext, ActivityPipeline
from engine.worker.history_cache import HistoryCache
from engine.worker.projection import RecordProjector
from engine.worker.work_items import WorkReader
from engine.worker.workflow_task import WorkflowTasks
from engine.worker.workflows import WorkflowPipeline
from observability import configure_logging, watch_consumers

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
        app_id: str | None = None,
        replay_rules: ReplayRules | None = None,
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
            app_id: the application this runtime belongs to (default APP_ID, else none). It
                takes only the workflow work of its application's instances: those started
                for it, and children called with its ``app_id`` (see docs/protocol.md).
                Characters other than letters, digits, '-' and '_' become '_'.
            replay_rules: how replay holds code to history (default: jetloom's; ``engine.dapr``
                uses ``ReplayRules.dapr()``).
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
        self.task_queues = [check_name("task queue", q) for q in task_queues or ["default"]]
        self.subjects = Subjects.of(prefix)
        self.activity_lease = activity_lease
        self.workflow_task_lease = workflow_task_lease
        self.replicas = replicas
        self.stall_retry_max = stall_retry_max
        self.connect_options = dict(connect_options or {})
        self.registry = Registry()
        self.history_cache_size = history_cache_size
        self.app_id = app_token(app_id_or_default(app_id))
        self.replay_rules = replay_rules or ReplayRules()
        self.retention = retention
        self.dispatch_ttl = dispatch_ttl
        self._broker: JetStreamBroker | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._work_stream: WorkStreamLayout | None = None
        self._loops: list[asyncio.Task[None]] = []
        self._inflight: set[asyncio.Task[Any]] = set()
        self.workflow_pipeline: WorkflowPipeline | None = None
        """Serving workflow tasks (once started, if the runtime hosts workflows)."""
        self.activity_pipeline: ActivityPipeline | None = None
        """Serving activities (once started, if the runtime hosts activities)."""
        self._started = False
        self._late_starts: set[str] = set()

    # ------------------------------------------------------------ registration

    def register_workflow(self, fn: F, *, name: str | None = None) -> F:
        """Host ``fn`` as a workflow (name defaults to the function's name).

        Allowed after ``start()`` too: the first workflow registered then starts serving
        workflow work.
        """
        definition = self.registry.add_workflow(fn, name=name)
        fn.__jetloom_name__ = definition.name  # type: ignore[attr-defined]
        self._serve_late("workflows")
        return fn

    def register_versioned_workflow(
        self,
        fn: F,
        *,
        name: str,
        version_name: str | None = None,
        is_latest: bool = False,
    ) -> F:
        """Host ``fn`` as version ``version_name`` (default: the function's name) of workflow
        ``name``.

        New instances run the latest version (the last registered with ``is_latest``, else the
        first registered); a running instance keeps the version it started with, recorded in
        its history, so old instances finish on old code.
        """
        version = version_name if version_name is not None else fn.__name__
        self.registry.add_workflow(fn, name=name, version=version, is_latest=is_latest)
        fn.__jetloom_name__ = name  # type: ignore[attr-defined]
        self._serve_late("workflows")
        return fn

    def register_activity(
        self, fn: F, *, name: str | None = None, start_to_close_timeout: timedelta | None = None
    ) -> F:
        """Host ``fn`` as an activity (plain ``def`` runs in a thread pool).

        Allowed after ``start()`` too: the first activity registered then starts serving the
        runtime's task queues.
        """
        definition = self.registry.add_activity(
            fn, name=name, start_to_close_timeout=start_to_close_timeout
        )
        fn.__jetloom_name__ = definition.name  # type: ignore[attr-defined]
        self._serve_late("activities")
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

    def versioned_workflow(
        self, *, name: str, version_name: str | None = None, is_latest: bool = False
    ) -> Callable[[F], F]:
        """Decorator registering one version (``version_name``, default the function's name)
        of workflow ``name`` (see ``register_versioned_workflow``)."""

        def register(fn: F) -> F:
            return self.register_versioned_workflow(
                fn, name=name, version_name=version_name, is_latest=is_latest
            )

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
            # structlog's own default prints every level, to stdout; a worker logs at INFO (or
            # JETLOOM_LOG_LEVEL), to stderr, unless the process configured logging itself.
            configure_logging(level=os.environ.get("JETLOOM_LOG_LEVEL", "INFO"))
        nc = await connect_nats(self.nats_url, **self.connect_options)
        broker = self._broker = JetStreamBroker(
            nc, self.subjects, replicas=self.replicas,
            large_payload_threshold=self.large_payload_threshold,
            outbox_ttl=f"{int(self.dispatch_ttl.total_seconds())}s",
        )
        await broker.ensure_topology()
        # The work stream as the server has it: its replicas and its routing.
        self._work_stream = await broker.work_stream_layout()
        self._loop = asyncio.get_running_loop()
        s = self.subjects
        watched: list[str] = []
        if self.registry.workflow_names:
            await self._ensure_workflow_consumer()
            watched.append(self._serve_workflows())
        if self.registry.activity_names:
            await self._ensure_activity_consumers()
            watched.extend(await self._serve_activities())
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
            **({"app_id": self.app_id} if self.app_id else {}),
        )

    @property
    def workflows_consumer(self) -> str:
        """The durable consumer of this runtime's workflow work (its application's)."""
        return self.subjects.app_workflows_consumer(self.app_id)

    @property
    def _confirm_acks(self) -> bool:
        # Acknowledgements are confirmed where a consumer leader can change under a live
        # connection: on a replicated work stream.
        return self._work_stream is not None and self._work_stream.replicas > 1

    async def _ensure_workflow_consumer(self) -> None:
        assert self._work_stream is not None
        await self.broker.ensure_consumer(
            self.workflows_consumer,
            self.subjects.workflow_filters(self.app_id, routed=self._work_stream.routed),
            ack_wait=self.workflow_task_lease.total_seconds(), max_ack_pending=100_000,
        )

    def _serve_workflows(self) -> str:
        """Start the workflow pipeline; the consumer it serves."""
        broker = self.broker
        projector = RecordProjector(broker)
        reader = WorkReader(self.subjects, self.registry, self.app_id)
        tasks = WorkflowTasks(
            broker, self.registry, HistoryCache(self.history_cache_size), projector, reader,
            rules=self.replay_rules, retention=self.retention,
        )
        self.workflow_pipeline = WorkflowPipeline(
            broker, tasks, projector, reader,
            consumer=self.workflows_consumer,
            capacity=self.max_concurrent_workflow_tasks,
            stall_retry_max=self.stall_retry_max,
            confirm_acks=self._confirm_acks,
            spawn=self._spawn,
        )
        self._loops.append(asyncio.create_task(self.workflow_pipeline.serve()))
        return self.workflows_consumer

    async def _ensure_activity_consumers(self) -> None:
        s = self.subjects
        for queue in self.task_queues:
            await self.broker.ensure_consumer(
                s.activities_consumer(queue), [s.outbox_activity(queue)],
                ack_wait=self.activity_lease.total_seconds(), max_ack_pending=100_000,
            )

    async def _serve_activities(self) -> list[str]:
        """Start the activity pipeline; the consumers it serves."""
        self.activity_pipeline = ActivityPipeline(
            self.broker, self.registry, capacity=self.max_concurrent_activities,
            lease=self.activity_lease, confirm_acks=self._confirm_acks, spawn=self._spawn,
        )
        await self.activity_pipeline.start()  # hears cancel requests from now on
        for queue in self.task_queues:
            self._loops.append(asyncio.create_task(
                self.activity_pipeline.serve(queue, len(self.task_queues))
            ))
        return [self.subjects.activities_consumer(queue) for queue in self.task_queues]

    def _serve_late(self, kind: str) -> None:
        """After ``start()``, start the pipeline of ``kind`` ("workflows" or "activities") if
        nothing serves that kind yet: the runtime was started without any."""
        if not self._started or self._loop is None:
            return
        pipeline = self.workflow_pipeline if kind == "workflows" else self.activity_pipeline
        if pipeline is not None or kind in self._late_starts:
            return
        self._late_starts.add(kind)

        async def serve() -> None:
            try:
                if kind == "workflows":
                    await self._ensure_workflow_consumer()
                    self._serve_workflows()
                else:
                    await self._ensure_activity_consumers()
                    await self._serve_activities()
                log.info("runtime.serving_late_registration", kind=kind)
            except Exception as exc:
                log.error("runtime.late_registration_failed", kind=kind, error=repr(exc))
            finally:
                self._late_starts.discard(kind)

        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._spawn(serve())
        else:  # registered from another thread than the runtime's loop
            asyncio.run_coroutine_threadsafe(serve(), self._loop)

    async def shutdown(self, timeout: float = 30.0) -> None:
        """Stop taking work, let in-flight work finish (up to ``timeout``), disconnect."""
        if not self._started:
            return
        for pipeline in (self.workflow_pipeline, self.activity_pipeline):
            if pipeline is not None:
                pipeline.stopping = True
        await stop_tasks(self._loops, timeout=LOOP_STOP_TIMEOUT)
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
