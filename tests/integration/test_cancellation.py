"""Terminate (and cancelled tasks) stop running activities, on a real server."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import timedelta

from brokers import JetStreamBroker, Subjects, connect_nats
from engine import (
    ActivityContext,
    TaskCompleted,
    TaskFailed,
    WorkflowContext,
    WorkflowRuntime,
    WorkflowStatus,
    when_any,
)

GENEROUS = 15.0
"""Seconds within which an activity must have stopped (it stops within a second)."""


def results_in(history: list[object]) -> list[object]:
    """The activity results a history holds."""
    return [e for e in history if isinstance(e, TaskCompleted | TaskFailed)]


async def wait_for(event: asyncio.Event | threading.Event, timeout: float = GENEROUS) -> None:
    if isinstance(event, asyncio.Event):
        await asyncio.wait_for(event.wait(), timeout)
    else:
        assert await asyncio.to_thread(event.wait, timeout), "the event never came"


class TestTerminateStopsActivities:
    async def test_an_async_activity_is_cancelled_at_its_next_await(
        self, nats_url, prefix, client
    ):
        """Terminate cancels a running async activity (asyncio.CancelledError at its await);
        the attempt ends without a result."""
        wfr = WorkflowRuntime(nats_url, prefix=prefix)
        started, stopped = asyncio.Event(), asyncio.Event()
        finished: list[str] = []

        @wfr.activity
        async def crunch(ctx: ActivityContext) -> str:
            started.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                stopped.set()
                raise
            finished.append("crunch")
            return "done"

        @wfr.workflow
        async def job(ctx: WorkflowContext) -> str:
            return await ctx.call_activity(crunch)

        async with wfr:
            await client.schedule_new_workflow(job, instance_id="job-1")
            await wait_for(started)
            terminated_at = time.monotonic()
            await client.terminate_workflow("job-1", output="stopped by hand")
            await wait_for(stopped)
            took = time.monotonic() - terminated_at
            state = await client.wait_for_workflow_completion("job-1", timeout=GENEROUS)
            history = await client.get_history("job-1")
        print(f"\nthe activity stopped {took * 1000:.0f} ms after terminate")
        assert WorkflowStatus.TERMINATED == state.runtime_status
        assert [] == finished
        assert [] == results_in(history)

    async def test_a_plain_def_activity_sees_is_cancelled(self, nats_url, prefix, client):
        """A plain def activity polls ctx.is_cancelled (and heartbeat() raises); whatever it
        returns then is dropped."""
        wfr = WorkflowRuntime(nats_url, prefix=prefix)
        started, noticed = threading.Event(), threading.Event()
        heartbeat_raised: list[str] = []

        @wfr.activity
        def copy_files(ctx: ActivityContext) -> str:
            started.set()
            while not ctx.is_cancelled:
                ctx.heartbeat()  # extends the lease from the worker's thread
                time.sleep(0.02)
            noticed.set()
            try:
                ctx.heartbeat()
            except asyncio.CancelledError:
                heartbeat_raised.append("CancelledError")
            return "partial copy"

        @wfr.workflow
        async def backup(ctx: WorkflowContext) -> str:
            return await ctx.call_activity(copy_files)

        async with wfr:
            await client.schedule_new_workflow(backup, instance_id="backup-1")
            await wait_for(started)
            await client.terminate_workflow("backup-1")
            await wait_for(noticed)
            await client.wait_for_workflow_completion("backup-1", timeout=GENEROUS)
            await asyncio.sleep(0.5)  # a result, were one sent, would be in history by now
            history = await client.get_history("backup-1")
        assert ["CancelledError"] == heartbeat_raised
        assert [] == results_in(history)

    async def test_a_worker_down_at_terminate_does_not_run_the_activity(
        self, nats_url, prefix, client
    ):
        """An activity task taken after its run was terminated (the worker was down when the
        cancel went out) is not run: the worker looks the cancel up first."""
        orchestrator = WorkflowRuntime(nats_url, prefix=prefix)
        ran: list[str] = []

        @orchestrator.workflow
        async def report(ctx: WorkflowContext) -> str:
            return await ctx.call_activity("render")

        async with orchestrator:
            await client.schedule_new_workflow(report, instance_id="report-1")
            await client.wait_for_workflow_start("report-1", timeout=GENEROUS)
            await client.terminate_workflow("report-1")
            await client.wait_for_workflow_completion("report-1", timeout=GENEROUS)

        renderer = WorkflowRuntime(nats_url, prefix=prefix)

        @renderer.activity
        async def render(ctx: ActivityContext) -> str:
            ran.append(ctx.workflow_id)
            return "pdf"

        nc = await connect_nats(nats_url)
        broker = JetStreamBroker(nc, Subjects(prefix))
        try:
            async with renderer:
                consumer = Subjects(prefix).activities_consumer("default")
                deadline = time.monotonic() + GENEROUS
                while True:  # until the task was taken and settled
                    info = await broker.js.consumer_info(Subjects(prefix).work_stream, consumer)
                    if not info.num_pending and not info.num_ack_pending:
                        break
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.1)
        finally:
            await nc.close()
        assert [] == ran


class TestCancelledTasks:
    async def test_the_activity_that_lost_a_race_is_stopped(self, nats_url, prefix, client):
        """when_any(..., cancel_losers=True): the slower activity is cancelled when the faster
        one returns, and the workflow completes with the winner."""
        wfr = WorkflowRuntime(nats_url, prefix=prefix)
        slow_stopped = asyncio.Event()

        @wfr.activity
        async def ask_provider(ctx: ActivityContext, seconds: float) -> float:
            try:
                await asyncio.sleep(seconds)
            except asyncio.CancelledError:
                slow_stopped.set()
                raise
            return seconds

        @wfr.workflow
        async def fastest(ctx: WorkflowContext) -> float:
            quick = ctx.call_activity(ask_provider, input=0.05)
            slow = ctx.call_activity(ask_provider, input=3600.0)
            winner = await when_any([quick, slow], cancel_losers=True)
            return float(winner.get_result())

        async with wfr:
            await client.schedule_new_workflow(fastest, instance_id="race-1")
            state = await client.wait_for_workflow_completion("race-1", timeout=GENEROUS)
            await wait_for(slow_stopped)
        assert "0.05" == state.serialized_output

    async def test_a_cancelled_activity_is_awaited_as_cancelled(
        self, nats_url, prefix, client
    ):
        """Task.cancel() stops the activity and the workflow sees TaskCancelledError."""
        wfr = WorkflowRuntime(nats_url, prefix=prefix)
        stopped = asyncio.Event()

        @wfr.activity
        async def long_poll(ctx: ActivityContext) -> str:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                stopped.set()
                raise
            return "data"

        @wfr.workflow
        async def poll_with_deadline(ctx: WorkflowContext) -> str:
            polling = ctx.call_activity(long_poll)
            await ctx.create_timer(timedelta(milliseconds=300))
            polling.cancel()
            try:
                return str(await polling)
            except Exception as error:
                return type(error).__name__

        async with wfr:
            await client.schedule_new_workflow(poll_with_deadline, instance_id="poll-1")
            state = await client.wait_for_workflow_completion("poll-1", timeout=GENEROUS)
            await wait_for(stopped)
        assert '"TaskCancelledError"' == state.serialized_output
