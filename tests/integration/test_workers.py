"""Workers as real, separate processes: competing consumers, crashes, restarts and limits."""

# Expected values come first in asserts (STYLE.md), which SIM300 calls a Yoda condition.

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from brokers._server import EmbeddedNatsServer, free_port
from engine import (
    ActivityContext,
    WorkflowClient,
    WorkflowContext,
    WorkflowRuntime,
    WorkflowState,
    WorkflowStatus,
    when_all,
)
from engine.worker.workflow_task import WorkflowTasks
from tests.processes import ROOT, LineProcess, start_worker_script

WORKER_SCRIPT = ROOT / "tests" / "workers" / "worker.py"


class WorkerProcess(LineProcess):
    """One ``tests/workers/worker.py`` subprocess, whose stdout lines the test can wait for."""


@pytest.fixture
async def spawn_worker(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Start worker subprocesses (each waited for until ``ready``); stop them all afterwards."""
    started: list[WorkerProcess] = []

    async def spawn(nats_url: str, prefix: str, name: str, *options: str) -> WorkerProcess:
        log_path = tmp_path / f"{name}-{len(started)}.stderr"
        proc = await start_worker_script(
            WORKER_SCRIPT, nats_url, prefix, name, *options, log_path=log_path
        )
        worker = WorkerProcess(name, proc)
        started.append(worker)
        await worker.wait_for_line(lambda line: line == "ready", timeout=20)
        return worker

    yield spawn
    for worker in started:
        await worker.stop()


def _record_lines(path: Path) -> list[tuple[str, str]]:
    """The (worker name, task_execution_id) pairs the activities appended to ``path``."""
    if not path.exists():
        return []
    pairs = [line.split(" ", 1) for line in path.read_text().splitlines()]
    return [(worker, task_execution_id) for worker, task_execution_id in pairs]


class TestCompetingConsumers:
    """Several worker processes share one durable consumer and split the work."""

    async def test_fan_out_is_split_between_two_workers_each_task_once(
        self, nats_url, prefix, client, spawn_worker, tmp_path
    ):
        """40 activities fanned out run once each, some on worker wA and some on worker wB."""
        record = tmp_path / "work.log"
        for name in ("wA", "wB"):
            await spawn_worker(
                nats_url,
                prefix,
                name,
                "--activities",
                "--record",
                str(record),
                "--max-activities",
                "4",
            )
        orchestrator = WorkflowRuntime(nats_url, prefix=prefix)

        @orchestrator.workflow(name="fan_out")
        async def fan_out(ctx: WorkflowContext, n: int) -> list[int]:
            return await when_all([ctx.call_activity("record_work", input=i) for i in range(n)])

        async with orchestrator:
            iid = await client.schedule_new_workflow(fan_out, input=40)
            state = await client.wait_for_workflow_completion(iid, timeout=30)

        assert WorkflowStatus.COMPLETED is state.runtime_status
        assert [2 * i for i in range(40)] == json.loads(state.serialized_output)
        ran = _record_lines(record)
        task_ids = [task_id for _, task_id in ran]
        assert 40 == len(task_ids)
        assert 40 == len(set(task_ids)), "a task_execution_id ran twice"
        assert {"wA", "wB"} == {worker for worker, _ in ran}


class TestDurableTimers:
    """Timers are held by the server, not by any worker's memory."""

    @pytest.mark.slow
    async def test_timer_fires_for_an_orchestrator_started_after_a_kill(
        self, nats_url, prefix, client, spawn_worker
    ):
        """A 3 s timer set by a SIGKILLed orchestrator completes the instance on a new one."""
        first = await spawn_worker(nats_url, prefix, "orch1", "--workflows")
        iid = await client.schedule_new_workflow("sleepy", input=3.0)
        await client.wait_for_workflow_start(iid, timeout=15)
        await first.kill()

        # Deliberately let the timer come due while no worker exists at all.
        await asyncio.sleep(3.5)
        idle = await client.get_workflow_state(iid)
        assert idle is not None
        assert WorkflowStatus.RUNNING is idle.runtime_status

        await spawn_worker(nats_url, prefix, "orch2", "--workflows")
        state = await client.wait_for_workflow_completion(iid, timeout=20)
        assert WorkflowStatus.COMPLETED is state.runtime_status
        assert '"woke"' == state.serialized_output

    @pytest.mark.slow
    async def test_timer_survives_a_nats_server_restart(self, tmp_path, spawn_worker):
        """A timer that comes due while nats-server is down completes its instance after the
        server returns on the same port and store, with the worker reconnecting by itself."""
        prefix = "restart"
        with EmbeddedNatsServer(store_dir=tmp_path / "store", port=free_port()) as server:
            orchestrator = await spawn_worker(server.url, prefix, "orch", "--workflows")
            try:
                async with await WorkflowClient.connect(server.url, prefix=prefix) as client:
                    iid = await client.schedule_new_workflow("sleepy", input=2.0)
                    await client.wait_for_workflow_start(iid, timeout=15)
                    server.stop()
                    # Deliberately keep the server down until after the timer is due.
                    await asyncio.sleep(3.0)
                    server.start()
                    state = await client.wait_for_workflow_completion(iid, timeout=30)
                assert orchestrator.proc.returncode is None, "the worker must survive the outage"
            finally:
                # Before the server goes for good, so the worker shuts down cleanly.
                await orchestrator.stop()
        assert WorkflowStatus.COMPLETED is state.runtime_status
        assert '"woke"' == state.serialized_output


class TestConcurrencyLimits:
    """A runtime never holds more unfinished work than its limits."""

    async def test_activities_never_exceed_max_concurrent_activities(
        self, nats_url, prefix, client
    ):
        """With max_concurrent_activities=2, 10 fanned-out activities all finish, 2 at a time."""
        running = 0
        peak = 0
        runtime = WorkflowRuntime(nats_url, prefix=prefix, max_concurrent_activities=2)

        @runtime.activity
        async def measured(ctx: ActivityContext, x: int) -> int:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            try:
                await asyncio.sleep(0.1)
            finally:
                running -= 1
            return x

        @runtime.workflow
        async def fan_out_10(ctx: WorkflowContext) -> list[int]:
            return await when_all([ctx.call_activity(measured, input=i) for i in range(10)])

        async with runtime:
            iid = await client.schedule_new_workflow(fan_out_10)
            state = await client.wait_for_workflow_completion(iid, timeout=30)

        assert WorkflowStatus.COMPLETED is state.runtime_status
        assert list(range(10)) == json.loads(state.serialized_output)
        assert 2 == peak

    async def test_workflow_tasks_never_exceed_max_concurrent_workflow_tasks(
        self, nats_url, prefix, client
    ):
        """With max_concurrent_workflow_tasks=1, 10 waiting instances all complete, one task at
        a time."""
        states, peak_in_task, peak_slots = await _run_ten_naps(nats_url, prefix, client, limit=1)

        assert [WorkflowStatus.COMPLETED] * 10 == [s.runtime_status for s in states]
        assert [str(i) for i in range(10)] == [s.serialized_output for s in states]
        assert (1, 1) == (peak_in_task, peak_slots)

    async def test_workflow_task_probe_sees_overlap_when_the_limit_allows_it(
        self, nats_url, prefix, client
    ):
        """With the default limit the same probes see workflow tasks overlap (they can see it)."""
        states, peak_in_task, peak_slots = await _run_ten_naps(nats_url, prefix, client, limit=100)

        assert [WorkflowStatus.COMPLETED] * 10 == [s.runtime_status for s in states]
        assert peak_in_task > 1
        assert peak_slots > 1


async def _run_ten_naps(
    nats_url: str, prefix: str, client: WorkflowClient, *, limit: int
) -> tuple[list[WorkflowState], int, int]:
    """Run 10 short timer workflows on a runtime with ``limit`` workflow tasks.

    Returns:
        The final states, the most workflow tasks seen in progress at once (history load,
        replay, append, projection), and the most workflow slots the runtime held at once.
    """
    runtime = WorkflowRuntime(nats_url, prefix=prefix, max_concurrent_workflow_tasks=limit)

    @runtime.workflow
    async def nap(ctx: WorkflowContext, x: int) -> int:
        await ctx.create_timer(timedelta(milliseconds=200))
        return x

    # Workflow code runs synchronously inside a task, so it cannot see overlap itself: wrap the
    # workflow task method, and sample the pipeline's count of held messages, instead.
    in_task = 0
    peak_in_task = 0
    run_task = WorkflowTasks.run

    async def counting_task(*args: Any, **kwargs: Any) -> Any:
        nonlocal in_task, peak_in_task
        in_task += 1
        peak_in_task = max(peak_in_task, in_task)
        try:
            return await run_task(*args, **kwargs)
        finally:
            in_task -= 1

    peak_slots = 0

    async def sample_slots() -> None:
        nonlocal peak_slots
        while True:
            if runtime.workflow_pipeline is not None:
                peak_slots = max(peak_slots, runtime.workflow_pipeline.held)
            await asyncio.sleep(0)

    # Start every instance before the runtime, so all 10 start items are waiting at once.
    iids = [await client.schedule_new_workflow(nap, input=i) for i in range(10)]
    sampler = asyncio.create_task(sample_slots())
    WorkflowTasks.run = counting_task  # type: ignore[method-assign]
    try:
        async with runtime:
            states = await asyncio.gather(
                *(client.wait_for_workflow_completion(i, timeout=30) for i in iids)
            )
    finally:
        WorkflowTasks.run = run_task  # type: ignore[method-assign]
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
    return list(states), peak_in_task, peak_slots


class TestActivityRedelivery:
    """An activity whose worker dies is redelivered to another worker after its lease."""

    @pytest.mark.slow
    async def test_activity_of_a_killed_worker_is_redelivered_to_another(
        self, nats_url, prefix, client, spawn_worker, tmp_path
    ):
        """Worker wA is SIGKILLed mid-activity; after the 2 s lease wB runs the same task."""
        record = tmp_path / "attempts.log"
        orchestrator = WorkflowRuntime(nats_url, prefix=prefix)

        @orchestrator.workflow(name="one_hang")
        async def one_hang(ctx: WorkflowContext) -> str:
            return await ctx.call_activity("hang_once", input=1)

        common = ("--activities", "--record", str(record), "--lease", "2")
        hanging = await spawn_worker(nats_url, prefix, "wA", *common, "--hang")
        async with orchestrator:
            iid = await client.schedule_new_workflow(one_hang)
            started = await hanging.wait_for_line(lambda line: line.startswith("started "))
            task_execution_id = started.split(" ", 1)[1]
            await hanging.kill()
            await spawn_worker(nats_url, prefix, "wB", *common)
            # Well under the 30 s default lease: only the 2 s lease can make this in time.
            state = await client.wait_for_workflow_completion(iid, timeout=15)

        assert WorkflowStatus.COMPLETED is state.runtime_status
        assert '"done by wB"' == state.serialized_output
        assert [("wA", task_execution_id), ("wB", task_execution_id)] == _record_lines(record)
