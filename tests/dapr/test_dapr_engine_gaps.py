"""What the native engine does so that Dapr programs behave as under Dapr (phase 2).

Each test states Dapr's behaviour, through the public engine API that ``engine.dapr`` uses
instead of a workaround (docs/dapr.md lists the changes).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

import engine
import engine.dapr as wf
from engine.core.events import EventRaised, ExecutionStarted, HistoryEvent, TimerFired
from engine.core.executor import ReplayRules, WorkflowExecution
from engine.core.registry import Registry
from engine.http import build_app

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def replay(
    registry: Registry, history: list[Any], incoming: list[Any], now: datetime,
    rules: ReplayRules | None = None,
) -> Any:
    """One workflow task of a run with ``history``, fed ``incoming`` at ``now``."""
    return WorkflowExecution(registry, "i1", history, rules).run_task(incoming, now)


def started(name: str, payload: bytes = b"null") -> ExecutionStarted:
    return ExecutionStarted(timestamp=T0, name=name, execution_id="e1",
                            input=msgspec.Raw(payload))


class TestExecutor:
    """engine/core/executor.py: replay rules Dapr programs rely on (``ReplayRules.dapr()``)."""

    def test_save_events_keeps_events_of_the_last_task(self) -> None:
        """An event raised just before continue_as_new(save_events=True) is carried over."""
        registry = Registry()

        async def restarts(ctx: engine.WorkflowContext, n: int) -> None:
            await ctx.create_timer(timedelta(seconds=1))
            ctx.continue_as_new(n + 1, save_events=True)

        registry.add_workflow(restarts)
        first = started("restarts", b"0")
        task1 = replay(registry, [first], [], T0)
        t1 = T0 + timedelta(seconds=1)
        result = replay(registry, [first, *task1.new_events], [
            TimerFired(timestamp=t1, timer_id=1, fire_at=t1),
            EventRaised(timestamp=t1, name="go", data=msgspec.Raw(b'"x"'), event_id="ev1"),
        ], t1)
        assert "CONTINUED_AS_NEW" == result.status
        assert ["go"] == [e.name for e in result.carried_events]

    def test_calls_past_recorded_history_are_new(self) -> None:
        """Under Dapr's rules, code that now calls one more activity before waiting goes on
        with that call (versioning example, test5/test6)."""
        v2, history = _one_more_call_than_recorded()
        result = replay(v2, history, [], T0 + timedelta(seconds=1), ReplayRules.dapr())
        assert ["b"] == [e.name for e in result.new_events if hasattr(e, "input")]

    def test_calls_past_recorded_history_stall_by_default(self) -> None:
        """jetloom's own rule stays: the same change is a NonDeterminismError."""
        v2, history = _one_more_call_than_recorded()
        with pytest.raises(engine.NonDeterminismError):
            replay(v2, history, [], T0)

    def test_removed_patch_check_is_non_deterministic(self) -> None:
        """Under Dapr's rules, replaying history that applied patch 'p1' with code that no
        longer asks for it fails the task with NonDeterminismError (versioning example,
        test8)."""
        v1, v2 = Registry(), Registry()

        async def flow_v1(ctx: engine.WorkflowContext) -> Any:
            ctx.is_patched("p1")
            return await ctx.wait_for_external_event("e")

        async def flow_v2(ctx: engine.WorkflowContext) -> Any:
            return await ctx.wait_for_external_event("e")

        v1.add_workflow(flow_v1, name="flow")
        v2.add_workflow(flow_v2, name="flow")
        first = started("flow")
        task1 = replay(v1, [first], [], T0)
        with pytest.raises(engine.NonDeterminismError):
            replay(v2, [first, *task1.new_events],
                   [EventRaised(timestamp=T0, name="e", event_id="x")], T0, ReplayRules.dapr())
        assert "COMPLETED" == replay(v2, [first, *task1.new_events],  # jetloom: no check
                      [EventRaised(timestamp=T0, name="e", event_id="x")], T0).status


class TestRuntimeAndClient:
    """engine/worker/runtime.py and engine/client.py: public API Dapr programs need."""

    async def test_activity_registered_after_start(
        self, nats_url: str, prefix: str, client: engine.WorkflowClient
    ) -> None:
        """An activity registered after start() is served."""
        runtime = engine.WorkflowRuntime(nats_url, prefix=prefix)

        async def calls(ctx: engine.WorkflowContext) -> Any:
            return await ctx.call_activity("late")

        runtime.register_workflow(calls)
        async with runtime:

            async def late(ctx: engine.ActivityContext) -> str:
                return "served"

            runtime.register_activity(late)
            iid = await client.schedule_new_workflow(calls)
            state = await client.wait_for_workflow_completion(iid, timeout=5)
        assert '"served"' == state.serialized_output

    async def test_workflow_registered_after_start(
        self, nats_url: str, prefix: str, client: engine.WorkflowClient
    ) -> None:
        """A workflow registered after start() of a runtime that hosted none is served."""
        runtime = engine.WorkflowRuntime(nats_url, prefix=prefix)

        async def step(ctx: engine.ActivityContext) -> str:
            return "stepped"

        runtime.register_activity(step)
        async with runtime:

            async def late(ctx: engine.WorkflowContext) -> Any:
                return await ctx.call_activity("step")

            runtime.register_workflow(late)
            iid = await client.schedule_new_workflow(late)
            state = await client.wait_for_workflow_completion(iid, timeout=10)
        assert '"stepped"' == state.serialized_output

    async def test_pause_waits_for_the_status(
        self, nats_url: str, prefix: str, client: engine.WorkflowClient
    ) -> None:
        """pause_workflow(timeout=...) waits for SUSPENDED: with no worker, it times out;
        with a worker it returns with the instance SUSPENDED, and resume_workflow returns
        with it RUNNING."""
        runtime = engine.WorkflowRuntime(nats_url, prefix=prefix)

        async def waits(ctx: engine.WorkflowContext) -> Any:
            return await ctx.wait_for_external_event("go")

        runtime.register_workflow(waits)
        async with runtime:
            iid = await client.schedule_new_workflow(waits)
            await client.wait_for_workflow_start(iid)
        with pytest.raises(TimeoutError):
            await client.pause_workflow(iid, timeout=0.5)
        async with runtime:
            await client.pause_workflow(iid)
            paused = await client.get_workflow_state(iid)
            await client.resume_workflow(iid)
            resumed = await client.get_workflow_state(iid)
            await client.terminate_workflow(iid)
        assert paused is not None and resumed is not None
        assert [engine.WorkflowStatus.SUSPENDED, engine.WorkflowStatus.RUNNING] == [
            paused.runtime_status, resumed.runtime_status
        ]

    async def test_waits_take_no_limit(
        self, nats_url: str, prefix: str, client: engine.WorkflowClient
    ) -> None:
        """timeout=None waits without a limit; wait_for_workflow_status takes statuses."""
        runtime = engine.WorkflowRuntime(nats_url, prefix=prefix)

        async def quick(ctx: engine.WorkflowContext) -> int:
            return 7

        runtime.register_workflow(quick)
        async with runtime:
            iid = await client.schedule_new_workflow(quick)
            done = await client.wait_for_workflow_completion(iid, timeout=None)
            again = await client.wait_for_workflow_status(
                iid, {engine.WorkflowStatus.COMPLETED}, timeout=None
            )
        assert ("7", engine.WorkflowStatus.COMPLETED) == (
            done.serialized_output, again.runtime_status
        )

    async def test_versioned_registration(
        self, nats_url: str, prefix: str, client: engine.WorkflowClient
    ) -> None:
        """register_versioned_workflow(fn, name=, version_name=, is_latest=) records the
        version's own name; a new instance runs the latest."""
        runtime = engine.WorkflowRuntime(nats_url, prefix=prefix)

        def v1(ctx: engine.WorkflowContext) -> str:
            return "one"

        def v2(ctx: engine.WorkflowContext) -> str:
            return "two"

        runtime.register_versioned_workflow(v1, name="flow", version_name="1.0", is_latest=False)
        runtime.register_versioned_workflow(v2, name="flow", version_name="2.0", is_latest=True)
        async with runtime:
            iid = await client.schedule_new_workflow("flow")
            state = await client.wait_for_workflow_completion(iid, timeout=10)
            history = await client.get_history(iid)
        assert '"two"' == state.serialized_output
        assert "2.0" in [getattr(e, "version", "") for e in history]

    def test_rerun_from_event(self) -> None:
        """The client can rerun a finished instance from one of its events."""
        assert hasattr(engine.WorkflowClient, "rerun_workflow_from_event")

    def test_propagated_history_leaves_the_input_alone(
        self, nats_url: str, prefix: str
    ) -> None:
        """A child called with propagation= has its caller's input, as any client sees it:
        the history travels in a field of its own."""
        wfr = wf.WorkflowRuntime(nats_url=nats_url, prefix=prefix)

        @wfr.workflow
        def child(ctx: wf.DaprWorkflowContext, text: str) -> str:
            return text

        @wfr.workflow
        def parent(ctx: wf.DaprWorkflowContext) -> Any:
            result = yield ctx.call_child_workflow(
                child, input="x", instance_id="the-child",
                propagation=wf.PropagationScope.OWN_HISTORY,
            )
            return result

        wfr.start()
        try:
            dapr_client = wf.DaprWorkflowClient(nats_url=nats_url, prefix=prefix)
            iid = dapr_client.schedule_new_workflow(parent)
            dapr_client.wait_for_workflow_completion(iid, timeout_in_seconds=10)
            dapr_client.close()
        finally:
            wfr.shutdown()

        async def native_input() -> str | None:
            async with await engine.WorkflowClient.connect(nats_url, prefix=prefix) as native:
                state = await native.get_workflow_state("the-child")
                return None if state is None else state.serialized_input

        assert '"x"' == asyncio.run(native_input())


@pytest.fixture
async def http(client: engine.WorkflowClient) -> AsyncIterator[tuple[ClientSession, str]]:
    """The HTTP API served in-process over the test's client."""
    server = TestServer(build_app(client), host="127.0.0.1")
    await server.start_server()
    try:
        async with ClientSession() as session:
            yield session, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


class TestHttp:
    """engine/http/dapr_api.py: answer as a Dapr sidecar does (the Dapr JS SDK against
    serve-http)."""

    async def test_metadata(self, http: tuple[ClientSession, str]) -> None:
        """The sidecar metadata names the app and the built-in workflow component."""
        session, base = http
        async with session.get(f"{base}/v1.0/metadata") as response:
            assert 200 == response.status
            body = await response.json()
        assert {"name": "dapr", "type": "workflow.dapr"}.items() <= body["components"][0].items()

    async def test_text_body_is_the_input(
        self, http: tuple[ClientSession, str], client: engine.WorkflowClient
    ) -> None:
        """A text/plain body starts the workflow with that text as its input."""
        session, base = http
        async with session.post(f"{base}/v1.0/workflows/dapr/anything/start?instanceID=t1",
                                data="hello", headers={"Content-Type": "text/plain"}) as r:
            assert 202 == r.status
        state = await client.get_workflow_state("t1")
        assert state is not None and '"hello"' == state.serialized_input

    async def test_stalled_is_reported(
        self, http: tuple[ClientSession, str], client: engine.WorkflowClient,
        nats_url: str, prefix: str,
    ) -> None:
        """A stalled instance's runtimeStatus is STALLED."""
        runtime = engine.WorkflowRuntime(nats_url, prefix=prefix)

        async def stalls(ctx: engine.WorkflowContext) -> None:
            await asyncio.sleep(0)  # not an engine task: the task fails, the instance stalls

        runtime.register_workflow(stalls)
        async with runtime:
            iid = await client.schedule_new_workflow(stalls)
            await client.wait_for_workflow_status(
                iid, {engine.WorkflowStatus.STALLED}, timeout=10
            )
        session, base = http
        async with session.get(f"{base}/v1.0/workflows/dapr/{iid}") as response:
            body = await response.json()
        assert "STALLED" == body["runtimeStatus"]

    async def test_string_custom_status(
        self, http: tuple[ClientSession, str], client: engine.WorkflowClient,
        nats_url: str, prefix: str,
    ) -> None:
        """dapr.workflow.custom_status is the string the workflow set."""
        runtime = engine.WorkflowRuntime(nats_url, prefix=prefix)

        async def reports(ctx: engine.WorkflowContext) -> None:
            ctx.set_custom_status("halfway")
            await ctx.wait_for_external_event("go")

        runtime.register_workflow(reports)
        async with runtime:
            iid = await client.schedule_new_workflow(reports)
            await client.wait_for_workflow_start(iid)
            session, base = http
            for _ in range(50):
                async with session.get(f"{base}/v1.0/workflows/dapr/{iid}") as response:
                    status = (await response.json())["properties"][
                        "dapr.workflow.custom_status"]
                if status:
                    break
                await asyncio.sleep(0.1)
            await client.terminate_workflow(iid)
        assert "halfway" == status


def _one_more_call_than_recorded() -> tuple[Registry, list[HistoryEvent]]:
    """A registry whose ``flow`` calls activity ``b`` after ``a`` before waiting for event
    ``e``, and a history of the version without ``b`` that got as far as that wait."""
    v1, v2 = Registry(), Registry()

    async def flow_v1(ctx: engine.WorkflowContext) -> Any:
        await ctx.call_activity("a")
        return await ctx.wait_for_external_event("e")

    async def flow_v2(ctx: engine.WorkflowContext) -> Any:
        await ctx.call_activity("a")
        await ctx.call_activity("b")
        return await ctx.wait_for_external_event("e")

    v1.add_workflow(flow_v1, name="flow")
    v2.add_workflow(flow_v2, name="flow")
    first = started("flow")
    task1 = replay(v1, [first], [], T0)
    done = engine.core.events.TaskCompleted(timestamp=T0, task_id=1)
    task2 = replay(v1, [first, *task1.new_events], [done], T0)
    return v2, [first, *task1.new_events, *task2.new_events]
