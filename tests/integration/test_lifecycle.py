"""Retries, children, client operations, versions and stalled instances on a real server."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
import structlog

from engine import (
    RetryPolicy,
    TaskFailedError,
    WorkflowContext,
    WorkflowRuntime,
    WorkflowStatus,
)
from engine.core.errors import (
    InstanceAlreadyRunningError,
    InstanceNotFoundError,
    InvalidInstanceIdError,
)
from engine.core.state import decode_record


class TestRetries:
    async def test_exponential_retries_until_success(self, nats_url, prefix, client):
        """A flaky activity is retried with durable back-off timers until it succeeds."""
        wfr = WorkflowRuntime(nats_url, prefix=prefix)
        attempts: list[tuple[int, str]] = []

        @wfr.activity
        async def flaky(ctx) -> str:
            attempts.append((ctx.attempt, ctx.task_execution_id))
            if ctx.attempt < 3:
                raise ConnectionError("provider unavailable")
            return "ok"

        policy = RetryPolicy(
            first_retry_interval=timedelta(milliseconds=100),
            backoff_coefficient=2.0,
            max_retry_interval=timedelta(milliseconds=300),
            max_number_of_attempts=5,
        )

        @wfr.workflow
        async def resilient(ctx: WorkflowContext) -> str:
            return await ctx.call_activity(flaky, retry_policy=policy)

        async with wfr:
            iid = await client.schedule_new_workflow(resilient)
            state = await client.wait_for_workflow_completion(iid, timeout=30)
            history = await client.get_history(iid)
        assert '"ok"' == state.serialized_output
        assert [1, 2, 3] == [a for a, _ in attempts]
        assert 1 == len({key for _, key in attempts}), "idempotency key stable across retries"
        assert 2 == sum(type(e).__name__ == "TimerCreated" for e in history)

    async def test_gives_up_after_max_attempts(self, nats_url, prefix, client):
        """After max_number_of_attempts the failure reaches the workflow."""
        wfr = WorkflowRuntime(nats_url, prefix=prefix)
        calls: list[int] = []

        @wfr.activity
        async def always_fails(ctx) -> None:
            calls.append(ctx.attempt)
            raise ValueError("nope")

        policy = RetryPolicy(first_retry_interval=timedelta(milliseconds=50),
                             max_number_of_attempts=3)

        @wfr.workflow
        async def doomed(ctx: WorkflowContext) -> str:
            try:
                await ctx.call_activity(always_fails, retry_policy=policy)
            except TaskFailedError as err:
                return err.error_type
            return "unreachable"

        async with wfr:
            iid = await client.schedule_new_workflow(doomed)
            state = await client.wait_for_workflow_completion(iid, timeout=30)
        assert '"ValueError"' == state.serialized_output
        assert [1, 2, 3] == calls

    async def test_activity_timeout_fails_the_attempt(self, nats_url, prefix, client):
        """An attempt exceeding start_to_close_timeout fails with TimeoutError and is retried."""
        wfr = WorkflowRuntime(nats_url, prefix=prefix)

        @wfr.activity
        async def slow_first(ctx) -> str:
            if ctx.attempt == 1:
                await asyncio.sleep(30)
            return f"attempt {ctx.attempt}"

        @wfr.workflow
        async def patient(ctx: WorkflowContext) -> str:
            return await ctx.call_activity(
                slow_first,
                start_to_close_timeout=timedelta(milliseconds=300),
                retry_policy=RetryPolicy(timedelta(milliseconds=50), max_number_of_attempts=2),
            )

        async with wfr:
            iid = await client.schedule_new_workflow(patient)
            state = await client.wait_for_workflow_completion(iid, timeout=30)
            history = await client.get_history(iid)
        assert '"attempt 2"' == state.serialized_output
        failed = [e for e in history if type(e).__name__ == "TaskFailed"]
        assert ["TimeoutError"] == [e.failure.type for e in failed]


class TestChildWorkflows:
    async def test_child_result_returns_to_parent(self, nats_url, prefix, client):
        """A child workflow's output is the parent's task result."""
        wfr = WorkflowRuntime(nats_url, prefix=prefix)

        @wfr.activity
        async def add(ctx, pair: list[int]) -> int:
            return pair[0] + pair[1]

        @wfr.workflow
        async def child(ctx: WorkflowContext, n: int) -> int:
            return await ctx.call_activity(add, input=[n, 100])

        @wfr.workflow
        async def parent(ctx: WorkflowContext) -> list[int]:
            tasks = [ctx.call_child_workflow(child, input=i) for i in range(3)]
            first = await tasks[0]
            rest = [await t for t in tasks[1:]]
            return [first, *rest]

        async with wfr:
            iid = await client.schedule_new_workflow(parent, instance_id="parent-1")
            state = await client.wait_for_workflow_completion(iid, timeout=30)
            child_state = await client.get_workflow_state("parent-1-1")
        assert "[100,101,102]" == state.serialized_output
        assert WorkflowStatus.COMPLETED == child_state.runtime_status

    async def test_terminate_is_recursive(self, nats_url, prefix, client):
        """Terminating a parent terminates its running children."""
        wfr = WorkflowRuntime(nats_url, prefix=prefix)

        @wfr.workflow
        async def sleeper(ctx: WorkflowContext) -> None:
            await ctx.wait_for_external_event("never")

        @wfr.workflow
        async def boss(ctx: WorkflowContext) -> None:
            await ctx.call_child_workflow(sleeper, instance_id="sleeper-1")

        async with wfr:
            iid = await client.schedule_new_workflow(boss, instance_id="boss-1")
            await _wait_exists(client, "sleeper-1")
            await client.terminate_workflow(iid, output="stopped")
            parent_state = await client.wait_for_workflow_completion(iid, timeout=30)
            child_state = await client.wait_for_workflow_completion("sleeper-1", timeout=30)
        assert WorkflowStatus.TERMINATED == parent_state.runtime_status
        assert '"stopped"' == parent_state.serialized_output
        assert WorkflowStatus.TERMINATED == child_state.runtime_status

    async def test_child_of_a_workflow_nobody_hosts_is_visible_terminated_and_purged(
        self, nats_url, prefix, client
    ):
        """A child whose workflow no worker hosts (a typo'd name) gets a record, PENDING then
        STALLED with the reason; terminate ends it, its parent sees that as a failed child
        task, and purge removes it for good."""
        wfr = WorkflowRuntime(nats_url, prefix=prefix, stall_retry_max=timedelta(seconds=0.5))

        @wfr.workflow
        async def careless(ctx: WorkflowContext) -> str:
            try:
                await ctx.call_child_workflow("chlid", instance_id="typo-child")
            except TaskFailedError as exc:
                return f"child failed: {exc.error_type}"
            return "child done"

        kv = await client._broker.instances()
        watcher = await kv.watch("typo-child")  # subscribed before the child can exist
        async with wfr:
            iid = await client.schedule_new_workflow(careless, instance_id="careless-1")
            seen = await _statuses_until(watcher, WorkflowStatus.STALLED)
            stalled = await client.get_workflow_state("typo-child")
            await client.terminate_workflow("typo-child", output="typo")
            ended = await client.wait_for_workflow_completion("typo-child", timeout=20)
            parent = await client.wait_for_workflow_completion(iid, timeout=20)
            start = await _child_start(client._broker, "typo-child")
            purged = await client.purge_workflow("typo-child")
            with structlog.testing.capture_logs() as logs:
                # As a redelivery of the child's start after the purge would arrive.
                await client._broker.publish(client._broker.subjects.inbox("typo-child"), start)
                await _logged(logs, "start.dropped", "typo-child")
            after = await client.get_workflow_state("typo-child")
        await watcher.stop()
        assert [WorkflowStatus.PENDING, WorkflowStatus.STALLED] == seen
        assert "WorkflowNotRegisteredError" == stalled.failure_details.type
        assert "chlid" in stalled.failure_details.message
        assert (WorkflowStatus.TERMINATED, '"typo"') == (
            ended.runtime_status, ended.serialized_output
        )
        assert (WorkflowStatus.COMPLETED, '"child failed: Terminated"') == (
            parent.runtime_status, parent.serialized_output
        )
        assert (1, None) == (purged, after)

    async def test_terminating_the_parent_ends_a_child_nobody_hosts(
        self, nats_url, prefix, client
    ):
        """A recursive terminate of a parent ends its STALLED child too, and a recursive
        purge of the parent removes both."""
        wfr = WorkflowRuntime(nats_url, prefix=prefix, stall_retry_max=timedelta(seconds=0.5))

        @wfr.workflow
        async def hopeful(ctx: WorkflowContext) -> None:
            await ctx.call_child_workflow("missing", instance_id="missing-child")

        async with wfr:
            iid = await client.schedule_new_workflow(hopeful, instance_id="hopeful-1")
            await client._wait_until("missing-child", lambda s: s is WorkflowStatus.STALLED,
                                     20, False)
            await client.terminate_workflow(iid, recursive=True)
            child = await client.wait_for_workflow_completion("missing-child", timeout=20)
            purged = await client.purge_workflow(iid, recursive=True)
        assert WorkflowStatus.TERMINATED == child.runtime_status
        assert (2, None) == (purged, await client.get_workflow_state("missing-child"))


async def _child_start(broker, iid: str) -> bytes:
    """The work item that started child ``iid`` (its parent's dispatch, as the history stream
    keeps a copy of it)."""
    s = broker.subjects
    return (await broker.js.get_last_msg(s.history_stream, s.outbox_workflow(iid))).data


async def _logged(logs: list[dict], event: str, iid: str) -> None:
    """Wait until ``event`` was logged for instance ``iid``."""
    async with asyncio.timeout(20):
        while not any(e["event"] == event and e.get("instance_id") == iid for e in logs):
            await asyncio.sleep(0.02)


async def _statuses_until(watcher, last: WorkflowStatus) -> list[WorkflowStatus]:
    """The statuses a record watch shows, up to ``last``."""
    seen: list[WorkflowStatus] = []
    async with asyncio.timeout(20):
        while not seen or seen[-1] is not last:
            entry = await watcher.updates(timeout=None)
            if entry is not None and entry.value:
                seen.append(WorkflowStatus(decode_record(entry.value).status))
    return seen


async def _wait_exists(client, iid: str) -> None:
    """Wait (watching the instance's record) until the instance exists, in any status."""
    await client.wait_for_workflow_status(iid, lambda _: True, timeout=10)


class TestClientOperations:
    async def test_pause_holds_events_until_resume(self, nats_url, prefix, client):
        """A paused instance shows SUSPENDED and processes held events once resumed."""
        wfr = WorkflowRuntime(nats_url, prefix=prefix)

        @wfr.workflow
        async def gated(ctx: WorkflowContext) -> str:
            return await ctx.wait_for_external_event("open")

        async with wfr:
            iid = await client.schedule_new_workflow(gated)
            await client.wait_for_workflow_start(iid, timeout=10)
            await client.pause_workflow(iid)
            suspended = await client._wait_until(
                iid, lambda s: s is WorkflowStatus.SUSPENDED, 10, False
            )
            await client.raise_workflow_event(iid, "open", data="door")
            still = await client._wait_until(
                iid, lambda s: s is WorkflowStatus.SUSPENDED, 10, False
            )
            await client.resume_workflow(iid)
            state = await client.wait_for_workflow_completion(iid, timeout=30)
        assert WorkflowStatus.SUSPENDED == suspended.runtime_status == still.runtime_status
        assert '"door"' == state.serialized_output

    async def test_running_id_is_refused_and_finished_id_restarts(self, nats_url, prefix,
                                                                    client):
        """Dapr's rule: a running id is refused, a finished id starts a fresh run."""
        wfr = WorkflowRuntime(nats_url, prefix=prefix)

        @wfr.workflow
        async def echo(ctx: WorkflowContext, x: str) -> str:
            await ctx.wait_for_external_event("go")
            return x

        async with wfr:
            await client.schedule_new_workflow(echo, input="one", instance_id="same")
            with pytest.raises(InstanceAlreadyRunningError):
                await client.schedule_new_workflow(echo, input="two", instance_id="same")
            await client.wait_for_workflow_start("same", timeout=10)
            await client.raise_workflow_event("same", "go")
            first = await client.wait_for_workflow_completion("same", timeout=30)
            await client.schedule_new_workflow(echo, input="three", instance_id="same")
            await client.wait_for_workflow_start("same", timeout=10)
            await client.raise_workflow_event("same", "go")
            second = await client.wait_for_workflow_completion("same", timeout=30)
        assert ('"one"', '"three"') == (first.serialized_output, second.serialized_output)

    async def test_purge_removes_history_and_state(self, nats_url, prefix, client):
        """After purge the instance is unknown and its history is gone."""
        wfr = WorkflowRuntime(nats_url, prefix=prefix)

        @wfr.workflow
        async def quick(ctx: WorkflowContext) -> int:
            return 1

        async with wfr:
            iid = await client.schedule_new_workflow(quick)
            await client.wait_for_workflow_completion(iid, timeout=30)
            assert 1 == await client.purge_workflow(iid)
        assert None is await client.get_workflow_state(iid)
        with pytest.raises(InstanceNotFoundError):
            await client.get_history(iid)

    async def test_unknown_ids_and_bad_ids_give_clear_errors(self, client):
        """Operations on unknown or malformed ids raise specific errors."""
        with pytest.raises(InstanceNotFoundError, match="no instance 'ghost'"):
            await client.raise_workflow_event("ghost", "x")
        with pytest.raises(InstanceNotFoundError):
            await client.terminate_workflow("ghost")
        with pytest.raises(InstanceNotFoundError):
            await client.purge_workflow("ghost")
        with pytest.raises(InvalidInstanceIdError, match="letters, digits"):
            await client.schedule_new_workflow("anything", instance_id="has space")
        assert None is await client.get_workflow_state("ghost")

    async def test_list_filters_by_status_and_name(self, nats_url, prefix, client):
        """list_workflows filters by status and by workflow name."""
        wfr = WorkflowRuntime(nats_url, prefix=prefix)

        @wfr.workflow
        async def done(ctx: WorkflowContext) -> None:
            return None

        @wfr.workflow
        async def waits(ctx: WorkflowContext) -> None:
            await ctx.wait_for_external_event("never")

        async with wfr:
            a = await client.schedule_new_workflow(done, instance_id="list-a")
            b = await client.schedule_new_workflow(waits, instance_id="list-b")
            await client.wait_for_workflow_completion(a, timeout=30)
            await client.wait_for_workflow_start(b, timeout=30)
            completed = [s.instance_id async for s in
                         client.list_workflows(status=WorkflowStatus.COMPLETED)]
            by_name = [s.instance_id async for s in client.list_workflows(workflow_name="waits")]
        assert ["list-a"] == completed
        assert ["list-b"] == by_name

    async def test_scheduled_start(self, nats_url, prefix, client):
        """start_at delays the first workflow task to that time."""
        from datetime import UTC, datetime

        wfr = WorkflowRuntime(nats_url, prefix=prefix)

        @wfr.workflow
        async def later(ctx: WorkflowContext) -> str:
            return ctx.current_utc_datetime.isoformat()

        start_at = datetime.now(UTC) + timedelta(seconds=1)
        async with wfr:
            iid = await client.schedule_new_workflow(later, start_at=start_at)
            pending = await client.get_workflow_state(iid)
            state = await client.wait_for_workflow_completion(iid, timeout=30)
        assert WorkflowStatus.PENDING == pending.runtime_status
        ran_at = datetime.fromisoformat(state.serialized_output.strip('"'))
        assert ran_at >= start_at


class TestVersioningAndStalls:
    async def test_non_determinism_stalls_then_fixed_code_resumes(self, nats_url, prefix,
                                                                   client):
        """Changed code stalls an instance with NonDeterminismError; restored code resumes it."""
        order: list[str] = []

        def build(step_name: str) -> WorkflowRuntime:
            wfr = WorkflowRuntime(nats_url, prefix=prefix,
                                  stall_retry_max=timedelta(milliseconds=500))

            @wfr.activity(name="step_a")
            async def step_a(ctx) -> str:
                order.append("a")
                return "a"

            @wfr.activity(name="step_b")
            async def step_b(ctx) -> str:
                order.append("b")
                return "b"

            @wfr.workflow(name="flow")
            async def flow(ctx: WorkflowContext) -> str:
                first = await ctx.call_activity(step_name)
                ctx.set_custom_status("first step done")
                await ctx.wait_for_external_event("continue")
                return first

            return wfr

        async with build("step_a"):
            iid = await client.schedule_new_workflow("flow", instance_id="nd-1")
            await client.wait_for_workflow_start(iid, timeout=10)
            await _wait_custom_status(client, iid, "first step done")
        async with build("step_b"):  # a deployment that changed the first call
            await client.raise_workflow_event(iid, "continue")
            stalled = await client._wait_until(iid, lambda s: s is WorkflowStatus.STALLED,
                                               10, False)
        async with build("step_a"):  # the fix is deployed
            state = await client.wait_for_workflow_completion(iid, timeout=30)
        assert "NonDeterminismError" == stalled.failure_details.type
        assert "task_scheduled 'step_a'" in stalled.failure_details.message
        assert "'step_b'" in stalled.failure_details.message
        assert '"a"' == state.serialized_output

    async def test_versioned_workflow_keeps_running_instances_on_their_version(
        self, nats_url, prefix, client
    ):
        """A running instance finishes on the version it started with; new ones use the latest."""

        def build(with_v2: bool) -> WorkflowRuntime:
            wfr = WorkflowRuntime(nats_url, prefix=prefix)

            @wfr.versioned_workflow(name="greet", is_latest=not with_v2)
            async def v1(ctx: WorkflowContext) -> str:
                await ctx.wait_for_external_event("go")
                return "v1"

            if with_v2:
                @wfr.versioned_workflow(name="greet", is_latest=True)
                async def v2(ctx: WorkflowContext) -> str:
                    await ctx.create_timer(timedelta(milliseconds=10))
                    await ctx.wait_for_external_event("go")
                    return "v2"

            return wfr

        async with build(with_v2=False):
            old = await client.schedule_new_workflow("greet", instance_id="greet-old")
            await client.wait_for_workflow_start(old, timeout=10)
        async with build(with_v2=True):
            new = await client.schedule_new_workflow("greet", instance_id="greet-new")
            await client.wait_for_workflow_start(new, timeout=10)
            await client.raise_workflow_event(old, "go")
            await client.raise_workflow_event(new, "go")
            old_state = await client.wait_for_workflow_completion(old, timeout=30)
            new_state = await client.wait_for_workflow_completion(new, timeout=30)
        assert ('"v1"', '"v2"') == (old_state.serialized_output, new_state.serialized_output)

    async def test_is_patched_false_for_old_history_true_for_new(self, nats_url, prefix,
                                                                  client):
        """An instance that passed the patch point before the patch keeps its old path."""

        def build(patched: bool) -> WorkflowRuntime:
            wfr = WorkflowRuntime(nats_url, prefix=prefix)

            @wfr.workflow(name="patchy")
            async def patchy(ctx: WorkflowContext) -> str:
                if patched and ctx.is_patched("new-greeting"):
                    await ctx.create_timer(timedelta(milliseconds=10))
                    path = "new"
                else:
                    path = "old"
                await ctx.wait_for_external_event("go")
                return path

            return wfr

        async with build(patched=False):
            old = await client.schedule_new_workflow("patchy", instance_id="patchy-old")
            await client.wait_for_workflow_start(old, timeout=10)
        async with build(patched=True):
            new = await client.schedule_new_workflow("patchy", instance_id="patchy-new")
            await client.wait_for_workflow_start(new, timeout=10)
            await client.raise_workflow_event(old, "go")
            await client.raise_workflow_event(new, "go")
            old_state = await client.wait_for_workflow_completion(old, timeout=30)
            new_state = await client.wait_for_workflow_completion(new, timeout=30)
        assert ('"old"', '"new"') == (old_state.serialized_output, new_state.serialized_output)


async def _wait_custom_status(client, iid: str, text: str) -> None:
    """Wait (watching the instance's record) until its custom status says ``text``."""
    async with asyncio.timeout(10), client._watch.subscribe(iid) as changes:
        while True:  # subscribed before each read: no change between read and wait is missed
            state = await client.get_workflow_state(iid)
            if state is not None and state.serialized_custom_status == f'"{text}"':
                return
            await changes.next()
