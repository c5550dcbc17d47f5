"""The five workflow patterns end to end on a real nats-server."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import msgspec

from engine import (
    ActivityContext,
    TaskFailedError,
    WorkflowContext,
    WorkflowRuntime,
    WorkflowStatus,
    when_all,
    when_any,
)


class Order(msgspec.Struct):
    item: str
    qty: int


@dataclass
class Receipt:
    item: str
    total: int


class TestChaining:
    async def test_three_steps_run_in_order(self, nats_url, prefix, client):
        """Each step receives the previous step's typed output."""
        wfr = WorkflowRuntime(nats_url, prefix=prefix)
        calls: list[str] = []

        @wfr.activity
        async def price(ctx: ActivityContext, order: Order) -> int:
            calls.append("price")
            return order.qty * 5

        @wfr.activity
        def tax(ctx: ActivityContext, amount: int) -> int:  # sync: runs in a thread
            calls.append("tax")
            return amount + amount // 10

        @wfr.activity
        async def receipt(ctx: ActivityContext, total: int) -> Receipt:
            calls.append("receipt")
            return Receipt(item="widget", total=total)

        @wfr.workflow
        async def checkout(ctx: WorkflowContext, order: Order) -> Receipt:
            amount = await ctx.call_activity(price, input=order)
            total = await ctx.call_activity(tax, input=amount)
            return await ctx.call_activity(receipt, input=total)

        async with wfr:
            iid = await client.schedule_new_workflow(checkout, input=Order("widget", 4))
            state = await client.wait_for_workflow_completion(iid, timeout=30)
        assert WorkflowStatus.COMPLETED == state.runtime_status
        assert {"item": "widget", "total": 22} == msgspec.json.decode(state.serialized_output)
        assert ["price", "tax", "receipt"] == calls

    async def test_generator_workflow_dapr_style(self, nats_url, prefix, client):
        """A Dapr-style generator workflow yields tasks and gets their results back."""
        wfr = WorkflowRuntime(nats_url, prefix=prefix)

        @wfr.activity
        def double(ctx, x: int) -> int:
            return 2 * x

        @wfr.workflow
        def chain(ctx, x: int):
            y = yield ctx.call_activity(double, input=x)
            z = yield ctx.call_activity(double, input=y)
            return z

        async with wfr:
            iid = await client.schedule_new_workflow(chain, input=3)
            state = await client.wait_for_workflow_completion(iid, timeout=30)
        assert "12" == state.serialized_output


class TestFanOutFanIn:
    async def test_parallel_activities_are_aggregated(self, nats_url, prefix, client):
        """when_all returns all results in order; activities run once each."""
        wfr = WorkflowRuntime(nats_url, prefix=prefix)
        seen: list[str] = []

        @wfr.activity
        async def square(ctx: ActivityContext, x: int) -> int:
            seen.append(ctx.task_execution_id)
            return x * x

        @wfr.workflow
        async def sum_squares(ctx: WorkflowContext, n: int) -> int:
            results = await when_all([ctx.call_activity(square, input=i) for i in range(n)])
            return sum(results)

        async with wfr:
            iid = await client.schedule_new_workflow(sum_squares, input=20)
            state = await client.wait_for_workflow_completion(iid, timeout=30)
        assert str(sum(i * i for i in range(20))) == state.serialized_output
        assert 20 == len(seen) == len(set(seen))


class TestMonitor:
    async def test_loop_with_timer_and_continue_as_new(self, nats_url, prefix, client):
        """A monitor polls, sleeps on a durable timer and continues as new until done."""
        wfr = WorkflowRuntime(nats_url, prefix=prefix)

        @wfr.activity
        async def check(ctx, round_: int) -> bool:
            return round_ >= 3

        @wfr.workflow
        async def monitor(ctx: WorkflowContext, round_: int) -> int:
            healthy = await ctx.call_activity(check, input=round_)
            ctx.set_custom_status({"round": round_})
            if healthy:
                return round_
            await ctx.create_timer(timedelta(milliseconds=200))
            ctx.continue_as_new(round_ + 1)

        async with wfr:
            iid = await client.schedule_new_workflow(monitor, input=0, instance_id="monitor-1")
            state = await client.wait_for_workflow_completion(iid, timeout=30)
            history = await client.get_history(iid)
        assert WorkflowStatus.COMPLETED == state.runtime_status
        assert "3" == state.serialized_output
        assert '{"round":3}' == state.serialized_custom_status
        # The history holds only the last run: fresh history on continue_as_new.
        starts = [e for e in history if type(e).__name__ == "ExecutionStarted"]
        assert 1 == len(starts)
        assert b"3" == bytes(starts[0].input)

    async def test_save_events_keeps_every_event_across_runs(self, nats_url, prefix, client):
        """Events raised in a burst to an instance that continues as new after each one
        (save_events) all reach a run, whether they came in the task that continued, were
        buffered, or were addressed to the run that had just continued."""
        wfr = WorkflowRuntime(nats_url, prefix=prefix)

        @wfr.workflow
        async def counter(ctx: WorkflowContext, seen: int) -> int:
            await ctx.wait_for_external_event("tick")
            if seen + 1 == 10:
                return seen + 1
            ctx.continue_as_new(seen + 1, save_events=True)

        async with wfr:
            iid = await client.schedule_new_workflow(counter, input=0)
            await client.wait_for_workflow_start(iid, timeout=10)
            for _ in range(10):
                await client.raise_workflow_event(iid, "tick")
            state = await client.wait_for_workflow_completion(iid, timeout=30)
        assert (WorkflowStatus.COMPLETED, "10") == (state.runtime_status, state.serialized_output)


class TestDurableTimer:
    async def test_timer_delays_the_workflow(self, nats_url, prefix, client):
        """A timer fires after its delay, recorded as timer_created then timer_fired."""
        wfr = WorkflowRuntime(nats_url, prefix=prefix)

        @wfr.workflow
        async def delayed(ctx: WorkflowContext) -> str:
            start = ctx.current_utc_datetime
            await ctx.create_timer(timedelta(seconds=1))
            return str((ctx.current_utc_datetime - start) >= timedelta(seconds=1))

        async with wfr:
            iid = await client.schedule_new_workflow(delayed)
            state = await client.wait_for_workflow_completion(iid, timeout=30)
            history = await client.get_history(iid)
        assert '"True"' == state.serialized_output
        kinds = [type(e).__name__ for e in history]
        assert kinds.index("TimerCreated") < kinds.index("TimerFired")


class TestExternalEvents:
    async def test_event_raised_by_client_resumes_workflow(self, nats_url, prefix, client):
        """wait_for_external_event returns the data raised by the client."""
        wfr = WorkflowRuntime(nats_url, prefix=prefix)

        @wfr.workflow
        async def approval(ctx: WorkflowContext) -> str:
            decision = await ctx.wait_for_external_event("Approval", timeout=timedelta(seconds=30))
            return f"approved by {decision['by']}"

        async with wfr:
            iid = await client.schedule_new_workflow(approval)
            await client.wait_for_workflow_start(iid, timeout=10)
            await client.raise_workflow_event(iid, "approval", data={"by": "ana"})
            state = await client.wait_for_workflow_completion(iid, timeout=30)
        assert '"approved by ana"' == state.serialized_output

    async def test_timeout_path(self, nats_url, prefix, client):
        """Without the event, the wait raises TimeoutError inside the workflow."""
        wfr = WorkflowRuntime(nats_url, prefix=prefix)

        @wfr.workflow
        async def approval(ctx: WorkflowContext) -> str:
            try:
                await ctx.wait_for_external_event("approval", timeout=timedelta(seconds=1))
            except TimeoutError:
                return "escalated"
            return "approved"

        async with wfr:
            iid = await client.schedule_new_workflow(approval)
            state = await client.wait_for_workflow_completion(iid, timeout=30)
        assert '"escalated"' == state.serialized_output

    async def test_when_any_event_against_timer(self, nats_url, prefix, client):
        """when_any returns whichever of event and timer finished first."""
        wfr = WorkflowRuntime(nats_url, prefix=prefix)

        @wfr.workflow
        async def race(ctx: WorkflowContext) -> str:
            event = ctx.wait_for_external_event("go")
            timer = ctx.create_timer(timedelta(seconds=60))
            winner = await when_any([event, timer])
            return "event" if winner is event else "timer"

        async with wfr:
            iid = await client.schedule_new_workflow(race)
            await client.wait_for_workflow_start(iid, timeout=10)
            await client.raise_workflow_event(iid, "go")
            state = await client.wait_for_workflow_completion(iid, timeout=30)
        assert '"event"' == state.serialized_output


class TestCompensation:
    async def test_failed_activity_raises_task_failed_error(self, nats_url, prefix, client):
        """A failing activity surfaces as TaskFailedError and drives compensation."""
        wfr = WorkflowRuntime(nats_url, prefix=prefix)
        undone: list[int] = []

        @wfr.activity
        async def charge(ctx, amount: int) -> None:
            raise ValueError(f"card declined for {amount}")

        @wfr.activity
        async def refund(ctx, amount: int) -> None:
            undone.append(amount)

        @wfr.workflow
        async def pay(ctx: WorkflowContext, amount: int) -> str:
            try:
                await ctx.call_activity(charge, input=amount)
            except TaskFailedError as err:
                await ctx.call_activity(refund, input=amount)
                return f"{err.error_type}: {err.failure_details.message}"
            return "paid"

        async with wfr:
            iid = await client.schedule_new_workflow(pay, input=7)
            state = await client.wait_for_workflow_completion(iid, timeout=30)
        assert '"ValueError: card declined for 7"' == state.serialized_output
        assert [7] == undone

    async def test_unhandled_failure_fails_the_workflow(self, nats_url, prefix, client):
        """An exception escaping the workflow marks it FAILED with type and message."""
        wfr = WorkflowRuntime(nats_url, prefix=prefix)

        @wfr.workflow
        async def broken(ctx: WorkflowContext) -> None:
            raise RuntimeError("boom")

        async with wfr:
            iid = await client.schedule_new_workflow(broken)
            state = await client.wait_for_workflow_completion(iid, timeout=30)
        assert WorkflowStatus.FAILED == state.runtime_status
        assert ("RuntimeError", "boom") == (
            state.failure_details.type,
            state.failure_details.message,
        )


class TestParameterDefaults:
    async def test_default_is_used_when_no_input_is_given(self, nats_url, prefix, client):
        """A workflow or activity started or called without input gets its parameter's
        default; an input given still wins."""
        wfr = WorkflowRuntime(nats_url, prefix=prefix)

        @wfr.activity
        async def greet(ctx: ActivityContext, name: str = "world") -> str:
            return f"hello {name}"

        @wfr.workflow
        async def sleeper(ctx: WorkflowContext, secs: int = 30) -> list[object]:
            return [secs, await ctx.call_activity(greet)]

        async with wfr:
            default = await client.schedule_new_workflow(sleeper)
            given = await client.schedule_new_workflow(sleeper, input=2)
            states = [
                await client.wait_for_workflow_completion(iid, timeout=30)
                for iid in (default, given)
            ]
        assert ['[30,"hello world"]', '[2,"hello world"]'] == [
            s.serialized_output for s in states
        ]
