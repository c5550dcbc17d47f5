"""The replay executor, driven task by task without a server.

Every scenario runs for both workflow styles: ``async def`` workflows that await tasks and
Dapr-style generator workflows that yield them. The ``Simulation`` helper checks on every task
that a fresh replay and a sticky execution append the same events.
"""

# STYLE.md puts the expected value first in asserts, which ruff's SIM300 calls a Yoda condition.

from __future__ import annotations

import asyncio
import dataclasses
from datetime import datetime, timedelta
from typing import Any

import msgspec
import pytest
import structlog
from harness import T0, Simulation, commands, output, registry_of, task_started

import engine
from engine import RetryPolicy, TaskFailedError, WorkflowContext, when_all, when_any
from engine.core.codec import to_json
from engine.core.errors import NonDeterminismError
from engine.core.events import (
    ExecutionResumed,
    ExecutionStarted,
    ExecutionSuspended,
    ExecutionTerminated,
    TaskCompleted,
    TaskScheduled,
)
from engine.core.executor import WorkflowExecution


def both(async_fn: Any, generator_fn: Any) -> list[Any]:
    """Parameters running a test once per workflow style."""
    return [pytest.param(async_fn, id="async"), pytest.param(generator_fn, id="generator")]


def scheduled(result: Any) -> list[TaskScheduled]:
    """The TaskScheduled events a task appended."""
    return [e for e in result.new_events if isinstance(e, TaskScheduled)]


# ------------------------------------------------------------------------------------ workflows


async def chain_async(ctx: WorkflowContext, x: int) -> int:
    a = await ctx.call_activity("step", input=x)
    return await ctx.call_activity("step", input=a)


def chain_gen(ctx: WorkflowContext, x: int):
    a = yield ctx.call_activity("step", input=x)
    b = yield ctx.call_activity("step", input=a)
    return b


async def fan_async(ctx: WorkflowContext, n: int) -> list[Any]:
    return await when_all([ctx.call_activity("quote", input=i) for i in range(n)])


def fan_gen(ctx: WorkflowContext, n: int):
    results = yield when_all([ctx.call_activity("quote", input=i) for i in range(n)])
    return results


async def race_async(ctx: WorkflowContext) -> Any:
    approval = ctx.wait_for_external_event("approval")
    timer = ctx.create_timer(timedelta(hours=1))
    winner = await when_any([approval, timer])
    return approval.get_result() if winner is approval else "timed out"


def race_gen(ctx: WorkflowContext):
    approval = ctx.wait_for_external_event("approval")
    timer = ctx.create_timer(timedelta(hours=1))
    winner = yield when_any([approval, timer])
    return approval.get_result() if winner is approval else "timed out"


async def first_of_async(ctx: WorkflowContext) -> Any:
    winner = await when_any([ctx.call_activity("a"), ctx.call_activity("b")])
    return winner.get_result()


def first_of_gen(ctx: WorkflowContext):
    winner = yield when_any([ctx.call_activity("a"), ctx.call_activity("b")])
    return winner.get_result()


async def saga_async(ctx: WorkflowContext, order: str) -> str:
    try:
        await ctx.call_activity("charge", input=order)
    except TaskFailedError as error:
        details = error.failure_details
        await ctx.call_activity("refund", input=[error.error_type, details.message])
        return str(error)
    return "charged"


def saga_gen(ctx: WorkflowContext, order: str):
    try:
        yield ctx.call_activity("charge", input=order)
    except TaskFailedError as error:
        details = error.failure_details
        yield ctx.call_activity("refund", input=[error.error_type, details.message])
        return str(error)
    return "charged"


POLICY = RetryPolicy(first_retry_interval=timedelta(seconds=5), max_number_of_attempts=3)


async def retry_async(ctx: WorkflowContext, policy: dict[str, Any]) -> Any:
    return await ctx.call_activity("flaky", input="x", retry_policy=_policy(policy))


def retry_gen(ctx: WorkflowContext, policy: dict[str, Any]):
    result = yield ctx.call_activity("flaky", input="x", retry_policy=_policy(policy))
    return result


def _policy(spec: dict[str, Any]) -> RetryPolicy:
    """A RetryPolicy from a JSON-friendly spec (seconds), so it can be workflow input."""
    kw = dict(spec)
    for key in ("first_retry_interval", "max_retry_interval", "retry_timeout"):
        if key in kw:
            kw[key] = timedelta(seconds=kw[key])
    return RetryPolicy(**kw)


async def timers_async(ctx: WorkflowContext) -> str:
    await ctx.create_timer(timedelta(minutes=5))
    await ctx.create_timer(datetime(2024, 5, 2, tzinfo=T0.tzinfo))
    return ctx.current_utc_datetime.isoformat()


def timers_gen(ctx: WorkflowContext):
    yield ctx.create_timer(timedelta(minutes=5))
    yield ctx.create_timer(datetime(2024, 5, 2, tzinfo=T0.tzinfo))
    return ctx.current_utc_datetime.isoformat()


async def buffered_async(ctx: WorkflowContext) -> Any:
    await ctx.call_activity("prepare")
    return await ctx.wait_for_external_event("Approval")


def buffered_gen(ctx: WorkflowContext):
    yield ctx.call_activity("prepare")
    data = yield ctx.wait_for_external_event("Approval")
    return data


async def timeout_async(ctx: WorkflowContext) -> Any:
    try:
        return await ctx.wait_for_external_event("approval", timeout=timedelta(hours=2))
    except TimeoutError:
        return "no approval"


def timeout_gen(ctx: WorkflowContext):
    try:
        data = yield ctx.wait_for_external_event("approval", timeout=timedelta(hours=2))
    except TimeoutError:
        return "no approval"
    return data


async def two_events_async(ctx: WorkflowContext) -> list[Any]:
    first = await ctx.wait_for_external_event("x")
    second = await ctx.wait_for_external_event("x")
    return [first, second]


def two_events_gen(ctx: WorkflowContext):
    first = yield ctx.wait_for_external_event("x")
    second = yield ctx.wait_for_external_event("x")
    return [first, second]


async def cycle_async(ctx: WorkflowContext, n: int) -> Any:
    if n >= 1:
        return await ctx.wait_for_external_event("later")
    await ctx.call_activity("work", input=n)
    ctx.continue_as_new(n + 1, save_events=True)
    return None


def cycle_gen(ctx: WorkflowContext, n: int):
    if n >= 1:
        data = yield ctx.wait_for_external_event("later")
        return data
    yield ctx.call_activity("work", input=n)
    ctx.continue_as_new(n + 1, save_events=True)
    return None


async def forget_async(ctx: WorkflowContext, n: int) -> None:
    await ctx.call_activity("work", input=n)
    ctx.continue_as_new(n + 1)


def forget_gen(ctx: WorkflowContext, n: int):
    yield ctx.call_activity("work", input=n)
    ctx.continue_as_new(n + 1)


async def status_async(ctx: WorkflowContext) -> None:
    ctx.set_custom_status("step-1")
    await ctx.call_activity("work")
    ctx.set_custom_status({"stage": 2})
    await ctx.call_activity("work")


def status_gen(ctx: WorkflowContext):
    ctx.set_custom_status("step-1")
    yield ctx.call_activity("work")
    ctx.set_custom_status({"stage": 2})
    yield ctx.call_activity("work")


def _draw(ctx: WorkflowContext) -> list[Any]:
    rng = ctx.random()
    return [str(ctx.new_uuid()), rng.random(), ctx.current_utc_datetime.isoformat()]


async def values_async(ctx: WorkflowContext) -> list[Any]:
    before = _draw(ctx)
    await ctx.call_activity("use", input=before)
    return [before, _draw(ctx)]


def values_gen(ctx: WorkflowContext):
    before = _draw(ctx)
    yield ctx.call_activity("use", input=before)
    return [before, _draw(ctx)]


async def patched_async(ctx: WorkflowContext) -> str:
    if ctx.is_patched("fraud-check"):
        await ctx.call_activity("fraud_check")
    await ctx.call_activity("charge")
    await ctx.call_activity("ship")
    return "patched" if ctx.is_patched("fraud-check") else "unpatched"


def patched_gen(ctx: WorkflowContext):
    if ctx.is_patched("fraud-check"):
        yield ctx.call_activity("fraud_check")
    yield ctx.call_activity("charge")
    yield ctx.call_activity("ship")
    return "patched" if ctx.is_patched("fraud-check") else "unpatched"


async def unpatched_async(ctx: WorkflowContext) -> str:
    await ctx.call_activity("charge")
    await ctx.call_activity("ship")
    return "v1"


def unpatched_gen(ctx: WorkflowContext):
    yield ctx.call_activity("charge")
    yield ctx.call_activity("ship")
    return "v1"


async def raises_async(ctx: WorkflowContext, order_id: int) -> None:
    await ctx.call_activity("load", input=order_id)
    raise ValueError(f"order {order_id} has no lines")


def raises_gen(ctx: WorkflowContext, order_id: int):
    yield ctx.call_activity("load", input=order_id)
    raise ValueError(f"order {order_id} has no lines")


class Order(msgspec.Struct):
    item: str
    qty: int


@dataclasses.dataclass
class Parcel:
    weight_kg: float
    fragile: bool = False


async def order_async(ctx: WorkflowContext, order: Order) -> list[Any]:
    await ctx.call_activity("reserve", input=order)
    return [type(order).__name__, order.item, order.qty * 2]


def order_gen(ctx: WorkflowContext, order: Order):
    yield ctx.call_activity("reserve", input=order)
    return [type(order).__name__, order.item, order.qty * 2]


async def parcel_async(ctx: WorkflowContext, parcel: Parcel) -> list[Any]:
    return [type(parcel).__name__, parcel.weight_kg, parcel.fragile]


def parcel_gen(ctx: WorkflowContext, parcel: Parcel):
    yield from ()
    return [type(parcel).__name__, parcel.weight_kg, parcel.fragile]


def lookup_order(ctx: Any, order_id: int) -> Order:
    """An activity whose return hint decodes its result in the workflow."""
    raise NotImplementedError


async def typed_result_async(ctx: WorkflowContext) -> list[Any]:
    order = await ctx.call_activity(lookup_order, input=7)
    return [type(order).__name__, order.qty]


def typed_result_gen(ctx: WorkflowContext):
    order = yield ctx.call_activity(lookup_order, input=7)
    return [type(order).__name__, order.qty]


# ---------------------------------------------------------------------------------------- tests


class TestChaining:
    @pytest.mark.parametrize("workflow", both(chain_async, chain_gen))
    def test_each_result_feeds_the_next_activity(self, workflow: Any) -> None:
        """Each activity is scheduled once the previous one returned, with its result as input."""
        sim = Simulation(registry_of(workflow), 1)

        assert [("activity", "step", 1, 1)] == commands(sim.step())
        assert [("activity", "step", 2, 2)] == commands(sim.step(sim.completed(1, 2)))
        result = sim.step(sim.completed(2, 3))

        assert [("COMPLETED", 3)] == commands(result)
        assert ("COMPLETED", 3) == (result.status, output(result))

    @pytest.mark.parametrize("workflow", both(chain_async, chain_gen))
    def test_first_task_appends_task_started_then_commands(self, workflow: Any) -> None:
        """A task's new events start with its WorkflowTaskStarted, stamped with the task time."""
        sim = Simulation(registry_of(workflow), 1)

        result = sim.step()

        assert T0 == task_started(result).timestamp
        assert ["workflow_task_started", "task_scheduled"] == [
            type(e).__struct_config__.tag for e in result.new_events
        ]
        assert ("RUNNING", "run-1:1") == (result.status, scheduled(result)[0].task_execution_id)


class TestWhenAll:
    @pytest.mark.parametrize("workflow", both(fan_async, fan_gen))
    def test_results_come_in_task_order(self, workflow: Any) -> None:
        """when_all returns results in the order of its tasks, whatever order they finish in."""
        sim = Simulation(registry_of(workflow), 3)

        first = sim.step()
        partial = sim.step(sim.completed(3, "c"), sim.completed(1, "a"))
        result = sim.step(sim.completed(2, "b"))

        assert [1, 2, 3] == [e.task_id for e in scheduled(first)]
        assert ("RUNNING", []) == (partial.status, commands(partial))
        assert ["a", "b", "c"] == output(result)

    @pytest.mark.parametrize("workflow", both(fan_async, fan_gen))
    def test_failure_is_raised_only_after_all_finished(self, workflow: Any) -> None:
        """A failed task does not end when_all early; the first failure in task order is raised."""
        sim = Simulation(registry_of(workflow), 3)
        sim.step()

        waiting = sim.step(sim.failed(3, "IOError", "third"))
        waiting2 = sim.step(sim.failed(2, "KeyError", "second"))
        result = sim.step(sim.completed(1, "a"))

        assert ["RUNNING", "RUNNING"] == [waiting.status, waiting2.status]
        assert ("FAILED", "TaskFailedError") == (result.status, result.failure.type)
        assert "activity 'quote' failed: KeyError: second" == result.failure.message

    @pytest.mark.parametrize("workflow", both(fan_async, fan_gen))
    def test_empty_list_completes_at_once(self, workflow: Any) -> None:
        """when_all of no tasks completes immediately with an empty list."""
        sim = Simulation(registry_of(workflow), 0)

        assert [("COMPLETED", [])] == commands(sim.step())


class TestWhenAny:
    @pytest.mark.parametrize("workflow", both(race_async, race_gen))
    def test_event_before_timer_wins(self, workflow: Any) -> None:
        """An event arriving before the timeout timer is the winner."""
        sim = Simulation(registry_of(workflow))

        assert [("timer", 1, T0 + timedelta(hours=1))] == commands(sim.step())
        result = sim.step(sim.raised("approval", "yes"), after=timedelta(minutes=10))

        assert [("COMPLETED", "yes")] == commands(result)

    @pytest.mark.parametrize("workflow", both(race_async, race_gen))
    def test_timer_before_event_wins(self, workflow: Any) -> None:
        """A timer firing before the event is the winner; a late event is not accepted."""
        sim = Simulation(registry_of(workflow))
        sim.step()

        result = sim.step(sim.fired(1), after=timedelta(hours=1))
        late = WorkflowExecution(sim.registry, sim.instance_id, sim.history).run_task(
            [sim.raised("approval", "yes")], sim.now
        )

        assert [("COMPLETED", "timed out")] == commands(result)
        assert 1 == len(late.new_events)

    @pytest.mark.parametrize("workflow", both(first_of_async, first_of_gen))
    def test_first_finished_activity_wins(self, workflow: Any) -> None:
        """when_any yields the task that finished first, not the first in the list."""
        sim = Simulation(registry_of(workflow))
        sim.step()

        assert [("COMPLETED", "b")] == commands(sim.step(sim.completed(2, "b")))


async def derived_async(ctx: WorkflowContext, x: int) -> list[Any]:
    tenfold = await ctx.call_activity("step", input=x).derive(result=lambda v: v * 10)
    try:
        await ctx.call_activity("step", input=x).derive(failure=lambda e: KeyError(str(e)))
    except KeyError as exc:
        return [tenfold, type(exc).__name__]
    return [tenfold, "no failure"]


def derived_gen(ctx: WorkflowContext, x: int):
    tenfold = yield ctx.call_activity("step", input=x).derive(result=lambda v: v * 10)
    try:
        yield ctx.call_activity("step", input=x).derive(failure=lambda e: KeyError(str(e)))
    except KeyError as exc:
        return [tenfold, type(exc).__name__]
    return [tenfold, "no failure"]


class TestDerivedTasks:
    @pytest.mark.parametrize("workflow", both(derived_async, derived_gen))
    def test_result_and_failure_are_mapped(self, workflow: Any) -> None:
        """A derived task completes with its source's result mapped, or fails with its
        source's failure mapped."""
        sim = Simulation(registry_of(workflow), 4)
        sim.step()
        sim.step(sim.completed(1, 2))

        result = sim.step(sim.failed(2, "ValueError", "bad"))

        assert [("COMPLETED", [20, "KeyError"])] == commands(result)

    def test_completed_and_failed_tasks(self) -> None:
        """Task.completed and Task.failed are complete at once; a map that raises fails the
        derived task with that error."""
        error = ValueError("no")
        done, failed = engine.Task.completed(3), engine.Task.failed(error)
        broken = done.derive(result=lambda v: 1 / 0)

        assert (3, error) == (done.get_result(), failed.get_exception())
        assert isinstance(broken.get_exception(), ZeroDivisionError)


class TestActivityFailure:
    @pytest.mark.parametrize("workflow", both(saga_async, saga_gen))
    def test_failure_raises_task_failed_error_and_compensates(self, workflow: Any) -> None:
        """A failed activity raises TaskFailedError with its type and message, driving a refund."""
        sim = Simulation(registry_of(workflow), "order-7")

        assert [("activity", "charge", 1, "order-7")] == commands(sim.step())
        compensating = sim.step(sim.failed(1, "PaymentDeclined", "card expired"))
        result = sim.step(sim.completed(2))

        assert [("activity", "refund", 2, ["PaymentDeclined", "card expired"])] == commands(
            compensating
        )
        assert "activity 'charge' failed: PaymentDeclined: card expired" == output(result)

    @pytest.mark.parametrize("workflow", both(saga_async, saga_gen))
    def test_success_skips_compensation(self, workflow: Any) -> None:
        """Without a failure no compensating activity is issued."""
        sim = Simulation(registry_of(workflow), "order-7")
        sim.step()

        assert [("COMPLETED", "charged")] == commands(sim.step(sim.completed(1)))

    def test_task_queue_must_be_a_subject_token(self) -> None:
        """A task queue other than letters, digits, '-' and '_' fails the workflow, naming
        the rule, rather than publishing to a subject of the wrong shape."""

        async def dotted(ctx: WorkflowContext) -> Any:
            return await ctx.call_activity("step", task_queue="eu.west")

        result = Simulation(registry_of(dotted)).step()

        assert "FAILED" == result.status
        assert "invalid task queue name 'eu.west'" in result.failure.message


class TestRetryPolicy:
    @pytest.mark.parametrize("workflow", both(retry_async, retry_gen))
    def test_failure_waits_on_a_durable_timer_then_retries(self, workflow: Any) -> None:
        """A failed attempt sets a timer for now + delay, then reschedules as attempt 2."""
        policy = {"first_retry_interval": 5, "max_number_of_attempts": 3}
        sim = Simulation(registry_of(workflow), policy)
        first = scheduled(sim.step())[0]

        backoff = sim.step(sim.failed(1), after=timedelta(seconds=1))
        retried = sim.step(sim.fired(2), after=timedelta(seconds=5))
        second = scheduled(retried)[0]
        result = sim.step(sim.completed(3, "ok"))

        assert [("timer", 2, T0 + timedelta(seconds=6))] == commands(backoff)
        assert (3, "flaky", 2, "run-1:1") == (
            second.task_id,
            second.name,
            second.attempt,
            second.task_execution_id,
        )
        assert ("run-1:1", 1) == (first.task_execution_id, first.attempt)
        assert "ok" == output(result)

    @pytest.mark.parametrize("workflow", both(retry_async, retry_gen))
    def test_stops_after_max_number_of_attempts(self, workflow: Any) -> None:
        """The last allowed attempt's failure is raised instead of retried."""
        policy = {"first_retry_interval": 5, "max_number_of_attempts": 3}
        sim = Simulation(registry_of(workflow), policy)
        sim.step()
        sim.step(sim.failed(1))
        sim.step(sim.fired(2), after=timedelta(seconds=5))
        sim.step(sim.failed(3))
        third = scheduled(sim.step(sim.fired(4), after=timedelta(seconds=5)))[0]

        result = sim.step(sim.failed(5, "ValueError", "still broken"))

        assert (5, 3) == (third.task_id, third.attempt)
        assert [("FAILED", "TaskFailedError")] == commands(result)
        assert "activity 'flaky' failed: ValueError: still broken" == result.failure.message

    @pytest.mark.parametrize("workflow", both(retry_async, retry_gen))
    def test_exponential_backoff_is_capped(self, workflow: Any) -> None:
        """Delays grow by the coefficient and never exceed max_retry_interval."""
        policy = {
            "first_retry_interval": 1,
            "backoff_coefficient": 2.0,
            "max_retry_interval": 3,
            "max_number_of_attempts": 5,
        }
        sim = Simulation(registry_of(workflow), policy)
        sim.step()
        delays = []
        task_id = 1
        for _ in range(4):
            backoff = sim.step(sim.failed(task_id), after=timedelta(seconds=10))
            timer = commands(backoff)[0]
            delays.append((timer[2] - sim.now).total_seconds())
            retried = sim.step(sim.fired(timer[1]), after=timedelta(seconds=3))
            task_id = scheduled(retried)[0].task_id

        assert [1.0, 2.0, 3.0, 3.0] == delays
        assert [("FAILED", "TaskFailedError")] == commands(sim.step(sim.failed(task_id)))

    @pytest.mark.parametrize("workflow", both(retry_async, retry_gen))
    def test_no_retry_starts_after_retry_timeout(self, workflow: Any) -> None:
        """A retry that would start later than retry_timeout after the first attempt is not made."""
        policy = {"first_retry_interval": 10, "max_number_of_attempts": 10, "retry_timeout": 15}
        sim = Simulation(registry_of(workflow), policy)
        sim.step()

        first_backoff = sim.step(sim.failed(1))
        sim.step(sim.fired(2), after=timedelta(seconds=10))
        result = sim.step(sim.failed(3))

        assert [("timer", 2, T0 + timedelta(seconds=10))] == commands(first_backoff)
        assert [("FAILED", "TaskFailedError")] == commands(result)

    @pytest.mark.parametrize("workflow", both(retry_async, retry_gen))
    @pytest.mark.parametrize("error_type", ["PermissionError", "AuthError"])
    def test_non_retryable_error_types_fail_at_once(self, workflow: Any, error_type: str) -> None:
        """Errors listed as non-retryable (by type or name) are raised without a retry."""
        sim = Simulation(registry_of(workflow), {})
        policy = RetryPolicy(
            timedelta(seconds=1), 5, non_retryable_error_types=[PermissionError, "AuthError"]
        )
        sim.registry = registry_of(_fixed_policy_workflow(workflow, policy))
        sim.sticky = WorkflowExecution(sim.registry, sim.instance_id, list(sim.history))
        sim.step()

        result = sim.step(sim.failed(1, error_type, "denied"))

        assert [("FAILED", "TaskFailedError")] == commands(result)

    @pytest.mark.parametrize("workflow", both(retry_async, retry_gen))
    def test_failure_marked_non_retryable_fails_at_once(self, workflow: Any) -> None:
        """A failure the activity marked non-retryable is not retried."""
        sim = Simulation(
            registry_of(workflow), {"first_retry_interval": 1, "max_number_of_attempts": 5}
        )
        sim.step()

        result = sim.step(sim.failed(1, non_retryable=True))

        assert [("FAILED", "TaskFailedError")] == commands(result)

    def test_without_policy_a_failure_is_final(self) -> None:
        """An activity called without a retry policy is tried once."""
        sim = Simulation(registry_of(chain_async), 1)
        sim.step()

        assert [("FAILED", "TaskFailedError")] == commands(sim.step(sim.failed(1)))


def _fixed_policy_workflow(style: Any, policy: RetryPolicy) -> Any:
    """A retrying workflow of the same style with a policy that JSON input cannot express."""
    if style is retry_async:

        async def fixed_async(ctx: WorkflowContext) -> Any:
            return await ctx.call_activity("flaky", retry_policy=policy)

        return fixed_async

    def fixed_gen(ctx: WorkflowContext):
        result = yield ctx.call_activity("flaky", retry_policy=policy)
        return result

    return fixed_gen


class TestTimers:
    @pytest.mark.parametrize("workflow", both(timers_async, timers_gen))
    def test_timedelta_and_datetime_timers(self, workflow: Any) -> None:
        """A timedelta fires that long after the task's time; a datetime fires at that time."""
        sim = Simulation(registry_of(workflow))

        relative = sim.step()
        absolute = sim.step(sim.fired(1), after=timedelta(minutes=5))
        result = sim.step(sim.fired(2), after=timedelta(days=1))

        assert [("timer", 1, T0 + timedelta(minutes=5))] == commands(relative)
        assert [("timer", 2, datetime(2024, 5, 2, tzinfo=T0.tzinfo))] == commands(absolute)
        assert (T0 + timedelta(minutes=5, days=1)).isoformat() == output(result)

    def test_naive_datetime_fails_the_workflow(self) -> None:
        """A timer at a naive datetime is refused with a ValueError in the workflow."""

        async def naive(ctx: WorkflowContext) -> None:
            await ctx.create_timer(datetime(2024, 5, 2))

        result = Simulation(registry_of(naive)).step()

        assert ("FAILED", "ValueError") == (result.status, result.failure.type)
        assert "timezone-aware" in result.failure.message


class TestExternalEvents:
    @pytest.mark.parametrize("workflow", both(buffered_async, buffered_gen))
    def test_event_raised_before_the_wait_is_buffered(self, workflow: Any) -> None:
        """An event that arrives before the workflow waits for it is kept, matched by any case."""
        sim = Simulation(registry_of(workflow))
        sim.step()

        early = sim.step(sim.raised("APPROVAL", {"ok": True}))
        result = sim.step(sim.completed(1))

        assert ("RUNNING", []) == (early.status, commands(early))
        assert [("COMPLETED", {"ok": True})] == commands(result)

    @pytest.mark.parametrize("workflow", both(timeout_async, timeout_gen))
    def test_timeout_raises_timeout_error_in_the_workflow(self, workflow: Any) -> None:
        """Without the event before the timeout, the wait raises TimeoutError."""
        sim = Simulation(registry_of(workflow))

        assert [("timer", 1, T0 + timedelta(hours=2))] == commands(sim.step())
        result = sim.step(sim.fired(1), after=timedelta(hours=2))

        assert [("COMPLETED", "no approval")] == commands(result)

    @pytest.mark.parametrize("workflow", both(timeout_async, timeout_gen))
    def test_event_in_time_beats_the_timeout(self, workflow: Any) -> None:
        """An event arriving before the timeout completes the wait with its data."""
        sim = Simulation(registry_of(workflow))
        sim.step()

        result = sim.step(sim.raised("Approval", "granted"), after=timedelta(minutes=1))

        assert [("COMPLETED", "granted")] == commands(result)

    @pytest.mark.parametrize("workflow", both(two_events_async, two_events_gen))
    def test_duplicate_event_id_is_ignored(self, workflow: Any) -> None:
        """A redelivered event (same event_id) is not appended nor delivered twice."""
        sim = Simulation(registry_of(workflow))
        sim.step()
        sim.step(sim.raised("x", 1, event_id="e-1"))

        duplicate = sim.step(sim.raised("x", 1, event_id="e-1"))
        result = sim.step(sim.raised("x", 2, event_id="e-2"))

        assert (["workflow_task_started"], "RUNNING") == (
            [type(e).__struct_config__.tag for e in duplicate.new_events],
            duplicate.status,
        )
        assert [1, 2] == output(result)

    @pytest.mark.parametrize("workflow", both(two_events_async, two_events_gen))
    def test_events_without_id_are_all_delivered(self, workflow: Any) -> None:
        """Events without an event_id are never treated as duplicates."""
        sim = Simulation(registry_of(workflow))
        sim.step()

        result = sim.step(sim.raised("x", "a"), sim.raised("X", "b"))

        assert ["a", "b"] == output(result)


class TestContinueAsNew:
    @pytest.mark.parametrize("workflow", both(cycle_async, cycle_gen))
    def test_restarts_with_new_input_and_carries_events(self, workflow: Any) -> None:
        """continue_as_new ends the run and starts the next with new input and unconsumed events."""
        registry = registry_of(workflow)
        sim = Simulation(registry, 0)
        sim.step()
        event = sim.raised("later", "kept", event_id="ev-1")

        result = sim.step(event, sim.completed(1))
        following = result.continue_as_new
        next_run = Simulation.from_history(registry, [following, *result.carried_events])
        final = next_run.step()

        assert ("CONTINUED_AS_NEW", [("CONTINUED_AS_NEW", 1)]) == (result.status, commands(result))
        assert isinstance(following, ExecutionStarted)
        assert ("wf", b"1") == (following.name, bytes(following.input))
        assert following.execution_id not in ("", "run-1")
        assert [event] == result.carried_events
        assert ("COMPLETED", "kept") == (final.status, output(final))

    @pytest.mark.parametrize("workflow", both(cycle_async, cycle_gen))
    def test_next_run_id_is_deterministic(self, workflow: Any) -> None:
        """Running the same last task twice yields the same next run id."""
        sim = Simulation(registry_of(workflow), 0)
        sim.step()
        history, incoming = list(sim.history), [sim.completed(1)]

        ids = {
            WorkflowExecution(sim.registry, "inst-1", history)
            .run_task(incoming, sim.now)
            .continue_as_new.execution_id  # type: ignore[union-attr]
            for _ in range(2)
        }

        assert 1 == len(ids)

    @pytest.mark.parametrize("workflow", both(forget_async, forget_gen))
    def test_without_save_events_nothing_is_carried(self, workflow: Any) -> None:
        """Unconsumed events are dropped unless save_events is set."""
        sim = Simulation(registry_of(workflow), 0)
        sim.step()

        result = sim.step(sim.raised("later", "lost"), sim.completed(1))

        assert ("CONTINUED_AS_NEW", []) == (result.status, result.carried_events)
        assert b"1" == bytes(result.continue_as_new.input)  # type: ignore[union-attr]


class TestContext:
    @pytest.mark.parametrize("workflow", both(status_async, status_gen))
    def test_custom_status_is_reported_per_task(self, workflow: Any) -> None:
        """set_custom_status is visible in the result of the task that set it, and after replay."""
        sim = Simulation(registry_of(workflow))

        first = sim.step()
        second = sim.step(sim.completed(1))
        replayed = WorkflowExecution(sim.registry, "inst-1", sim.history).run_task([], sim.now)

        assert [b'"step-1"', b'{"stage":2}', b'{"stage":2}'] == [
            bytes(r.custom_status)
            for r in (first, second, replayed)  # type: ignore[arg-type]
        ]

    @pytest.mark.parametrize("workflow", both(values_async, values_gen))
    def test_uuid_random_and_time_are_stable_across_replays(self, workflow: Any) -> None:
        """new_uuid, random and current_utc_datetime give the same values when replayed."""
        sim = Simulation(registry_of(workflow))
        recorded = scheduled(sim.step())[0]

        result = sim.step(sim.completed(1), after=timedelta(minutes=3))
        before, after = output(result)

        assert msgspec.json.decode(bytes(recorded.input)) == before
        assert T0.isoformat() == before[2]
        assert (T0 + timedelta(minutes=3)).isoformat() == after[2]
        assert before[0] != after[0]
        assert before[1] != after[1]

    @pytest.mark.parametrize("workflow", both(values_async, values_gen))
    def test_values_depend_on_the_run(self, workflow: Any) -> None:
        """Another run of the workflow draws other ids and numbers."""
        one = Simulation(registry_of(workflow), execution_id="run-1")
        two = Simulation(registry_of(workflow), execution_id="run-2")

        first, second = (scheduled(s.step())[0].input for s in (one, two))

        assert bytes(first) != bytes(second)

    def test_is_replaying_true_only_during_replay(self) -> None:
        """Code sees is_replaying True while re-executing history, False on new work."""
        seen: list[tuple[str, bool]] = []

        async def observe(ctx: WorkflowContext) -> None:
            seen.append(("start", ctx.is_replaying))
            await ctx.call_activity("work")
            seen.append(("after", ctx.is_replaying))

        registry = registry_of(observe)
        history: list[Any] = [ExecutionStarted(timestamp=T0, name="wf", execution_id="r")]
        history += WorkflowExecution(registry, "i", history).run_task([], T0).new_events
        seen.append(("---", False))
        WorkflowExecution(registry, "i", history).run_task(
            [TaskCompleted(timestamp=T0, task_id=1)], T0
        )

        assert [("start", False), ("---", False), ("start", True), ("after", False)] == seen

    def test_logger_is_silent_while_replaying(self) -> None:
        """ctx.logger emits each line once, when the code first runs it, not on replays."""

        def chatty(ctx: WorkflowContext):
            ctx.logger.info("order.started", step=1)
            yield ctx.call_activity("work")
            ctx.logger.info("order.worked", step=2)
            yield ctx.call_activity("work")
            ctx.logger.info("order.done", step=3)

        sim = Simulation(registry_of(chatty), sticky=False)
        with structlog.testing.capture_logs() as logs:
            sim.step()
            sim.step(sim.completed(1))
            sim.step(sim.completed(2))

        assert ["order.started", "order.worked", "order.done"] == [e["event"] for e in logs]
        assert {"inst-1"} == {e["instance_id"] for e in logs}


class TestPatching:
    @pytest.mark.parametrize("workflow", both(patched_async, patched_gen))
    def test_new_run_takes_the_patch_and_records_it(self, workflow: Any) -> None:
        """On a new run is_patched is True, recorded in the task's WorkflowTaskStarted only."""
        sim = Simulation(registry_of(workflow))

        first = sim.step()
        second = sim.step(sim.completed(1))
        sim.step(sim.completed(2))
        result = sim.step(sim.completed(3))

        assert ("fraud-check",) == task_started(first).patches
        assert [("activity", "fraud_check", 1, None)] == commands(first)
        assert ((), [("activity", "charge", 2, None)]) == (
            task_started(second).patches,
            commands(second),
        )
        assert "patched" == output(result)

    @pytest.mark.parametrize(
        ("old", "new"),
        [
            pytest.param(unpatched_async, patched_async, id="async"),
            pytest.param(unpatched_gen, patched_gen, id="generator"),
        ],
    )
    def test_old_history_stays_unpatched(self, old: Any, new: Any) -> None:
        """Replaying a history without the patch answers False, consistently in later tasks."""
        sim = Simulation(registry_of(old), sticky=False)
        sim.step()
        sim.registry = registry_of(new)

        shipping = sim.step(sim.completed(1))
        result = sim.step(sim.completed(2))

        assert ((), [("activity", "ship", 2, None)]) == (
            task_started(shipping).patches,
            commands(shipping),
        )
        assert "unpatched" == output(result)


class TestSuspension:
    @pytest.mark.parametrize("workflow", both(chain_async, chain_gen))
    def test_results_are_held_until_resumed(self, workflow: Any) -> None:
        """While suspended a completed activity is recorded but not delivered to the code."""
        sim = Simulation(registry_of(workflow), 1)
        sim.step()

        paused = sim.step(ExecutionSuspended(timestamp=sim.now, reason="ops"))
        held = sim.step(sim.completed(1, 2))
        resumed = sim.step(ExecutionResumed(timestamp=sim.now))

        assert ["SUSPENDED", "SUSPENDED"] == [paused.status, held.status]
        assert ["workflow_task_started", "task_completed"] == [
            type(e).__struct_config__.tag for e in held.new_events
        ]
        assert ("RUNNING", [("activity", "step", 2, 2)]) == (resumed.status, commands(resumed))

    @pytest.mark.parametrize("workflow", both(chain_async, chain_gen))
    def test_termination_ends_the_run(self, workflow: Any) -> None:
        """ExecutionTerminated ends the run as TERMINATED with the given output."""
        sim = Simulation(registry_of(workflow), 1)
        sim.step()

        result = sim.step(ExecutionTerminated(timestamp=sim.now, output=to_json("stopped")))

        assert ("TERMINATED", [("TERMINATED", "stopped")]) == (result.status, commands(result))

    @pytest.mark.parametrize("workflow", both(chain_async, chain_gen))
    def test_termination_while_suspended(self, workflow: Any) -> None:
        """A suspended instance can be terminated."""
        sim = Simulation(registry_of(workflow), 1)
        sim.step()
        sim.step(ExecutionSuspended(timestamp=sim.now))

        result = sim.step(ExecutionTerminated(timestamp=sim.now))

        assert "TERMINATED" == result.status

    @pytest.mark.parametrize("workflow", both(chain_async, chain_gen))
    def test_resume_without_suspend_is_ignored(self, workflow: Any) -> None:
        """A resume of a running instance and a second suspend are not recorded."""
        sim = Simulation(registry_of(workflow), 1)
        sim.step()

        stray = sim.step(ExecutionResumed(timestamp=sim.now))
        sim.step(ExecutionSuspended(timestamp=sim.now))
        again = sim.step(ExecutionSuspended(timestamp=sim.now))

        assert [1, 1] == [len(stray.new_events), len(again.new_events)]


class TestDuplicates:
    @pytest.mark.parametrize("workflow", both(chain_async, chain_gen))
    def test_second_completion_of_a_task_is_dropped(self, workflow: Any) -> None:
        """A redelivered TaskCompleted, in the same or a later task, is not appended."""
        sim = Simulation(registry_of(workflow), 1)
        sim.step()

        first = sim.step(sim.completed(1, 2), sim.completed(1, 99))
        later = sim.step(sim.completed(1, 99))

        assert 1 == sum(isinstance(e, TaskCompleted) for e in first.new_events)
        assert [("activity", "step", 2, 2)] == commands(first)
        assert 1 == len(later.new_events)

    @pytest.mark.parametrize("workflow", both(chain_async, chain_gen))
    def test_duplicate_while_suspended_is_dropped(self, workflow: Any) -> None:
        """A TaskCompleted redelivered while the first is held by a suspension is not appended."""
        sim = Simulation(registry_of(workflow), 1)
        sim.step()
        sim.step(ExecutionSuspended(timestamp=sim.now))

        held = sim.step(sim.completed(1, 2), sim.completed(1, 99))
        again = sim.step(sim.completed(1, 99))
        resumed = sim.step(ExecutionResumed(timestamp=sim.now))

        assert 1 == sum(isinstance(e, TaskCompleted) for e in held.new_events)
        assert 1 == len(again.new_events)
        assert [("activity", "step", 2, 2)] == commands(resumed)

    @pytest.mark.parametrize("workflow", both(two_events_async, two_events_gen))
    def test_duplicate_event_while_suspended_is_dropped(self, workflow: Any) -> None:
        """An external event redelivered while suspended is delivered once after resuming."""
        sim = Simulation(registry_of(workflow))
        sim.step()
        sim.step(ExecutionSuspended(timestamp=sim.now))

        held = sim.step(sim.raised("x", 1, event_id="e-1"), sim.raised("x", 1, event_id="e-1"))
        sim.step(ExecutionResumed(timestamp=sim.now))
        result = sim.step(sim.raised("x", 2, event_id="e-2"))

        assert 2 == len(held.new_events)
        assert [1, 2] == output(result)

    @pytest.mark.parametrize("workflow", both(chain_async, chain_gen))
    def test_events_after_completion_are_dropped(self, workflow: Any) -> None:
        """A finished run accepts no further events."""
        sim = Simulation(registry_of(workflow), 1)
        sim.step()
        sim.step(sim.completed(1, 2))
        sim.step(sim.completed(2, 3))

        late = WorkflowExecution(sim.registry, "inst-1", sim.history).run_task(
            [sim.completed(2, 3), sim.raised("x")], sim.now
        )

        assert ("COMPLETED", 1) == (late.status, len(late.new_events))


class TestWorkflowFailure:
    @pytest.mark.parametrize("workflow", both(raises_async, raises_gen))
    def test_raising_workflow_fails_with_details(self, workflow: Any) -> None:
        """An exception escaping the workflow ends it FAILED with type, message and stack."""
        sim = Simulation(registry_of(workflow), 7)
        sim.step()

        result = sim.step(sim.completed(1))

        assert ("FAILED", "ValueError", "order 7 has no lines") == (
            result.status,
            result.failure.type,
            result.failure.message,
        )
        assert "raise ValueError" in result.failure.stack
        assert [("FAILED", "ValueError")] == commands(result)

    def test_unencodable_result_fails_the_workflow(self) -> None:
        """A return value that is not JSON-encodable fails the workflow with a TypeError."""

        async def returns_object(ctx: WorkflowContext) -> object:
            return object()

        result = Simulation(registry_of(returns_object)).step()

        assert ("FAILED", "TypeError") == (result.status, result.failure.type)

    def test_plain_function_workflow_completes_in_one_task(self) -> None:
        """A workflow that is neither async nor a generator completes with its return value."""

        def plain(ctx: WorkflowContext, x: int) -> int:
            return x + 1

        assert [("COMPLETED", 42)] == commands(Simulation(registry_of(plain), 41).step())


class TestInput:
    @pytest.mark.parametrize("workflow", both(order_async, order_gen))
    def test_struct_input_is_decoded(self, workflow: Any) -> None:
        """A msgspec.Struct type hint gets a decoded instance; activity input is re-encoded."""
        sim = Simulation(registry_of(workflow), {"item": "lamp", "qty": 2})

        first = sim.step()
        result = sim.step(sim.completed(1))

        assert [("activity", "reserve", 1, {"item": "lamp", "qty": 2})] == commands(first)
        assert ["Order", "lamp", 4] == output(result)

    @pytest.mark.parametrize("workflow", both(parcel_async, parcel_gen))
    def test_dataclass_input_is_decoded(self, workflow: Any) -> None:
        """A dataclass type hint gets a decoded instance with defaults filled in."""
        result = Simulation(registry_of(workflow), {"weight_kg": 1.5}).step()

        assert ["Parcel", 1.5, False] == output(result)

    @pytest.mark.parametrize("workflow", both(order_async, order_gen))
    @pytest.mark.parametrize(
        ("bad", "expected"),
        [
            ({"item": "lamp", "qty": "many"}, "$.qty"),
            ({"item": "lamp"}, "qty"),
        ],
    )
    def test_bad_input_fails_naming_the_field(self, workflow: Any, bad: Any, expected: str) -> None:
        """Input that does not fit the hint fails the workflow with an error naming the field."""
        result = Simulation(registry_of(workflow), bad).step()

        assert ("FAILED", "InputDecodeError") == (result.status, result.failure.type)
        assert expected in result.failure.message
        assert "input of workflow 'wf'" in result.failure.message

    @pytest.mark.parametrize("workflow", both(typed_result_async, typed_result_gen))
    def test_activity_result_is_decoded_by_its_return_hint(self, workflow: Any) -> None:
        """Calling an activity by function decodes its result to the function's return type."""
        sim = Simulation(registry_of(workflow))
        sim.step()

        result = sim.step(sim.completed(1, {"item": "lamp", "qty": 3}))

        assert ["Order", 3] == output(result)

    def test_registered_activity_timeout_is_scheduled(self) -> None:
        """The start_to_close_timeout given at registration travels with the task."""

        async def calls(ctx: WorkflowContext) -> None:
            await ctx.call_activity(lookup_order, input=1)
            await ctx.call_activity(lookup_order, input=2, start_to_close_timeout=timedelta(5))

        registry = registry_of(calls)
        registry.add_activity(lookup_order, start_to_close_timeout=timedelta(seconds=30))
        sim = Simulation(registry)

        first = scheduled(sim.step())[0]
        second = scheduled(sim.step(sim.completed(1, {"item": "a", "qty": 1})))[0]

        assert [30.0, 5 * 86400.0] == [first.start_to_close_timeout, second.start_to_close_timeout]


class TestForeignAwaitables:
    def test_asyncio_sleep_zero_is_non_deterministic(self) -> None:
        """Awaiting asyncio.sleep(0) (a bare yield) fails the task with NonDeterminismError."""

        async def sleeps(ctx: WorkflowContext) -> None:
            await asyncio.sleep(0)

        execution = WorkflowExecution(
            registry_of(sleeps), "i", Simulation(registry_of(sleeps)).history
        )

        with pytest.raises(NonDeterminismError, match="engine task") as caught:
            execution.run_task([], T0)
        assert "awaited NoneType" in caught.value.actual

    async def test_asyncio_sleep_in_running_loop_is_non_deterministic(self) -> None:
        """Awaiting asyncio.sleep inside a worker's event loop fails with NonDeterminismError."""

        async def sleeps(ctx: WorkflowContext) -> None:
            await asyncio.sleep(1)

        execution = WorkflowExecution(
            registry_of(sleeps), "i", Simulation(registry_of(sleeps)).history
        )

        with pytest.raises(NonDeterminismError) as caught:
            execution.run_task([], T0)
        assert "awaited Future" in caught.value.actual

    def test_generator_yielding_a_plain_value_is_non_deterministic(self) -> None:
        """A generator workflow that yields something other than a task is refused."""

        def yields_int(ctx: WorkflowContext):
            yield 5

        execution = WorkflowExecution(
            registry_of(yields_int), "i", Simulation(registry_of(yields_int)).history
        )

        with pytest.raises(NonDeterminismError) as caught:
            execution.run_task([], T0)
        assert "awaited int: 5" == caught.value.actual


class TestWorkflowTime:
    def test_a_task_on_a_slower_clock_keeps_the_workflow_time(self) -> None:
        """A task run by a worker whose clock is behind the last task's time is stamped with
        the last task's time: workflow time never goes backwards."""
        sim = Simulation(registry_of(chain_async), 1)
        first = task_started(sim.step(after=timedelta(seconds=5)))
        sim.now -= timedelta(seconds=3)  # the next worker's clock is 3 s behind
        second = task_started(sim.step(sim.completed(1, 2)))
        assert first.timestamp == second.timestamp
