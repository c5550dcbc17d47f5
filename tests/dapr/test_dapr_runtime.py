"""engine.dapr against a real nats-server: Dapr's behaviour where it differs from the native API.

Each test hosts a Dapr ``WorkflowRuntime`` in-process (it serves from its own thread) and
drives it with Dapr's synchronous or asynchronous client.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

import engine.dapr as wf
import engine.dapr.aio as wf_aio


@dataclass
class Parcel:
    weight: int


class Receipt(BaseModel):
    order_id: str
    total: float


@pytest.fixture
def make_runtime(nats_url: str, prefix: str) -> Iterator[Any]:
    """Dapr runtimes on the test's namespace, shut down at the end."""
    runtimes: list[wf.WorkflowRuntime] = []

    def make(**options: Any) -> wf.WorkflowRuntime:
        runtime = wf.WorkflowRuntime(nats_url=nats_url, prefix=prefix, **options)
        runtimes.append(runtime)
        return runtime

    yield make
    for runtime in runtimes:
        runtime.shutdown()


@pytest.fixture
def client(nats_url: str, prefix: str) -> Iterator[wf.DaprWorkflowClient]:
    """Dapr's synchronous client on the test's namespace."""
    c = wf.DaprWorkflowClient(nats_url=nats_url, prefix=prefix)
    yield c
    c.close()


class TestSteering:
    """pause/resume return once the instance has taken the new status."""

    def test_pause_then_resume(self, make_runtime: Any, client: wf.DaprWorkflowClient) -> None:
        """Right after pause_workflow the state is SUSPENDED; after resume_workflow, RUNNING."""
        wfr = make_runtime()

        @wfr.workflow
        def waits(ctx: wf.DaprWorkflowContext) -> Any:
            value = yield ctx.wait_for_external_event("go")
            return value

        wfr.start()
        iid = client.schedule_new_workflow(waits)
        client.wait_for_workflow_start(iid, timeout_in_seconds=10)
        client.pause_workflow(iid)
        paused = client.get_workflow_state(iid)
        client.resume_workflow(iid)
        resumed = client.get_workflow_state(iid)
        client.raise_workflow_event(iid, "go", data="done")
        done = client.wait_for_workflow_completion(iid, timeout_in_seconds=10)
        assert (wf.WorkflowStatus.SUSPENDED, wf.WorkflowStatus.RUNNING) == (
            paused.runtime_status, resumed.runtime_status
        )
        assert '"done"' == done.serialized_output


class TestRegistration:
    """Functions registered after start() are served."""

    def test_activity_registered_after_start(
        self, make_runtime: Any, client: wf.DaprWorkflowClient
    ) -> None:
        """A runtime started with workflows only serves an activity registered later."""
        wfr = make_runtime()

        @wfr.workflow
        def calls(ctx: wf.DaprWorkflowContext, x: int) -> Any:
            result = yield ctx.call_activity("late", input=x)
            return result

        wfr.start()

        def late(ctx: wf.WorkflowActivityContext, x: int) -> int:
            return x * 2

        wfr.register_activity(late)
        iid = client.schedule_new_workflow(calls, input=21)
        state = client.wait_for_workflow_completion(iid, timeout_in_seconds=15)
        assert "42" == state.serialized_output


class TestPayloads:
    """Inputs, outputs and custom status are what Dapr stores and returns."""

    def test_encodings(self, make_runtime: Any, client: wf.DaprWorkflowClient) -> None:
        """Dataclasses arrive as namespaces, models as models; outputs are Dapr's JSON, a
        string custom status is the string."""
        wfr = make_runtime()
        seen: dict[str, Any] = {}

        @wfr.activity
        def bill(ctx: wf.WorkflowActivityContext, receipt: Receipt) -> Receipt:
            seen["receipt"] = receipt
            return Receipt(order_id=receipt.order_id, total=receipt.total * 2)

        @wfr.workflow
        def ship(ctx: wf.DaprWorkflowContext, parcel: Parcel) -> Any:
            seen["parcel"] = parcel
            ctx.set_custom_status("billing")
            billed = yield ctx.call_activity(bill, input=Receipt(order_id="o1", total=1.5))
            return {"weight": parcel.weight, "billed": billed}

        wfr.start()
        iid = client.schedule_new_workflow(ship, input=Parcel(weight=3))
        state = client.wait_for_workflow_completion(iid, timeout_in_seconds=15)
        assert 3 == seen["parcel"].weight and not isinstance(seen["parcel"], Parcel)
        assert Receipt(order_id="o1", total=1.5) == seen["receipt"]
        assert '{"weight": 3, "billed": {"order_id": "o1", "total": 3.0}}' == (
            state.serialized_output
        )
        assert '{"weight": 3, "__durabletask_autoobject__": true}' == state.serialized_input
        assert "billing" == state.serialized_custom_status

    def test_falsy_event_data_is_none(
        self, make_runtime: Any, client: wf.DaprWorkflowClient
    ) -> None:
        """As in Dapr, an event raised with falsy data (0, "", False) carries None."""
        wfr = make_runtime()

        @wfr.workflow
        def waits(ctx: wf.DaprWorkflowContext) -> Any:
            value = yield ctx.wait_for_external_event("e")
            return [value]

        wfr.start()
        iid = client.schedule_new_workflow(waits)
        client.raise_workflow_event(iid, "e", data=0)
        assert "[null]" == client.wait_for_workflow_completion(
            iid, timeout_in_seconds=10
        ).serialized_output


class TestFailures:
    """Failures surface as Dapr's TaskFailedError; NonRetryableError is not retried."""

    def test_task_failed_error(self, make_runtime: Any, client: wf.DaprWorkflowClient) -> None:
        """A failed activity raises TaskFailedError with Dapr's details in the workflow."""
        wfr = make_runtime()
        attempts = []

        @wfr.activity
        def refuse(ctx: wf.WorkflowActivityContext) -> None:
            attempts.append(1)
            raise wf.NonRetryableError("no way")

        @wfr.workflow
        def tries(ctx: wf.DaprWorkflowContext) -> Any:
            policy = wf.RetryPolicy(first_retry_interval=timedelta(milliseconds=10),
                                    max_number_of_attempts=3)
            try:
                yield ctx.call_activity(refuse, retry_policy=policy)
            except wf.TaskFailedError as exc:
                return [exc.details.error_type, exc.details.message,
                        "no way" in (exc.details.stack_trace or "")]
            return None

        wfr.start()
        iid = client.schedule_new_workflow(tries)
        state = client.wait_for_workflow_completion(iid, timeout_in_seconds=15)
        assert '["NonRetryableError", "no way", true]' == state.serialized_output
        assert 1 == len(attempts)

    def test_failed_workflow_state(
        self, make_runtime: Any, client: wf.DaprWorkflowClient
    ) -> None:
        """A failed workflow's state carries failure_details and raise_if_failed raises."""
        wfr = make_runtime()

        @wfr.workflow
        def breaks(ctx: wf.DaprWorkflowContext) -> None:
            raise ValueError("broken")

        wfr.start()
        iid = client.schedule_new_workflow(breaks)
        state = client.wait_for_workflow_completion(iid, timeout_in_seconds=10)
        assert (wf.WorkflowStatus.FAILED, "ValueError", "broken") == (
            state.runtime_status, state.failure_details.error_type,
            state.failure_details.message,
        )
        with pytest.raises(Exception, match="broken"):
            state.raise_if_failed()


class TestTasks:
    """Dapr's task rules: zero timeouts, empty when_any, deterministic helpers."""

    def test_zero_timeout_and_empty_when_any(
        self, make_runtime: Any, client: wf.DaprWorkflowClient
    ) -> None:
        """timedelta(0) fails at once with TimeoutError; when_any([]) is []."""
        wfr = make_runtime()

        @wfr.workflow
        def quick(ctx: wf.DaprWorkflowContext) -> Any:
            nothing = yield wf.when_any([])
            try:
                yield ctx.wait_for_external_event("never", timeout=timedelta(0))
            except TimeoutError as exc:
                return [nothing, str(exc), ctx.now_with_sequence() < ctx.now_with_sequence()]
            return None

        wfr.start()
        iid = client.schedule_new_workflow(quick)
        state = client.wait_for_workflow_completion(iid, timeout_in_seconds=10)
        assert ('[[], "Wait for external event \'never\' canceled immediately due to zero '
                'timeout", true]') == state.serialized_output

    def test_event_timeout(self, make_runtime: Any, client: wf.DaprWorkflowClient) -> None:
        """A positive timeout fails the wait with TimeoutError when it passes first."""
        wfr = make_runtime()

        @wfr.workflow
        def impatient(ctx: wf.DaprWorkflowContext) -> Any:
            try:
                yield ctx.wait_for_external_event("late", timeout=timedelta(milliseconds=200))
            except TimeoutError:
                return "timed out"
            return "arrived"

        wfr.start()
        iid = client.schedule_new_workflow(impatient)
        assert '"timed out"' == client.wait_for_workflow_completion(
            iid, timeout_in_seconds=10
        ).serialized_output


class TestClient:
    """The clients' Dapr conventions."""

    def test_unknown_instance(self, client: wf.DaprWorkflowClient) -> None:
        """Unknown instances: no state, nothing to wait for, nothing to purge; an id jetloom
        cannot hold (Dapr's child ids have ':') is simply not there."""
        assert client.get_workflow_state("nope") is None
        assert client.get_workflow_state("parent:0001") is None
        assert client.wait_for_workflow_completion("nope") is None
        client.purge_workflow("nope")

    def test_wait_times_out(self, make_runtime: Any, client: wf.DaprWorkflowClient) -> None:
        """A wait with timeout_in_seconds raises TimeoutError with Dapr's message."""
        wfr = make_runtime()

        @wfr.workflow
        def forever(ctx: wf.DaprWorkflowContext) -> Any:
            yield ctx.wait_for_external_event("never")

        wfr.start()
        iid = client.schedule_new_workflow(forever)
        with pytest.raises(TimeoutError, match="Timed-out waiting for the orchestration"):
            client.wait_for_workflow_completion(iid, timeout_in_seconds=1)
        client.terminate_workflow(iid)
        assert wf.WorkflowStatus.TERMINATED == client.wait_for_workflow_completion(
            iid, timeout_in_seconds=10
        ).runtime_status

    def test_listing_and_history(
        self, make_runtime: Any, client: wf.DaprWorkflowClient
    ) -> None:
        """Instance ids page by continuation token; history has Dapr's event types."""
        wfr = make_runtime()

        @wfr.activity
        def one(ctx: wf.WorkflowActivityContext) -> int:
            return 1

        @wfr.workflow
        def flow(ctx: wf.DaprWorkflowContext) -> Any:
            value = yield ctx.call_activity(one)
            return value

        wfr.start()
        ids = [client.schedule_new_workflow(flow, instance_id=f"i{n}") for n in range(3)]
        for iid in ids:
            client.wait_for_workflow_completion(iid, timeout_in_seconds=10)
        first = client.list_workflow_instance_ids(page_size=2)
        assert (["i0", "i1"], "2") == (first.instance_ids, first.continuation_token)
        assert ids == list(client.iter_workflow_instance_ids(page_size=2))
        types = [e.event_type for e in client.get_workflow_history("i0")]
        assert wf.WorkflowHistoryEventType.TASK_SCHEDULED in types
        assert wf.WorkflowHistoryEventType.EXECUTION_COMPLETED == types[-1]

    async def test_aio_client(self, make_runtime: Any, nats_url: str, prefix: str) -> None:
        """The aio client works on the caller's loop while the runtime serves from its own."""
        wfr = make_runtime()

        @wfr.workflow
        def echo(ctx: wf.DaprWorkflowContext, text: str) -> str:
            return text

        wfr.start()
        aio_client = wf_aio.DaprWorkflowClient(nats_url=nats_url, prefix=prefix)
        iid = await aio_client.schedule_new_workflow(echo, input="hi")
        state = await aio_client.wait_for_workflow_completion(iid, timeout_in_seconds=10)
        await aio_client.aclose()
        assert '"hi"' == state.serialized_output


class TestApplications:
    """APP_ID names a process's application; app_id= routes an activity to it."""

    def test_activity_routed_to_its_app(
        self, make_runtime: Any, client: wf.DaprWorkflowClient,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """An activity called with app_id runs in that application's runtime only."""
        ran_in: list[str] = []

        def work(ctx: wf.WorkflowActivityContext) -> str:
            ran_in.append(threading.current_thread().name)
            return "ok"

        monkeypatch.setenv("APP_ID", "billing")
        billing = make_runtime(maximum_thread_pool_workers=1)
        billing.register_activity(work, name="work")
        monkeypatch.setenv("APP_ID", "orders")
        orders = make_runtime()

        def decoy(ctx: wf.WorkflowActivityContext) -> str:
            return "wrong app"

        orders.register_activity(decoy, name="work")

        @orders.workflow
        def order(ctx: wf.DaprWorkflowContext) -> Any:
            result = yield ctx.call_activity("work", app_id="billing")
            return result

        billing.start()
        orders.start()
        iid = client.schedule_new_workflow(order)
        assert '"ok"' == client.wait_for_workflow_completion(
            iid, timeout_in_seconds=15
        ).serialized_output
