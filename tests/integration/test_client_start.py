"""How ``WorkflowClient.schedule_new_workflow`` starts runs, against a real nats-server.

The client sends the start as work (one message); the worker that takes it appends
``execution_started`` together with the run's first task.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
import structlog

from brokers import JetStreamBroker
from engine import (
    WorkflowClient,
    WorkflowContext,
    WorkflowRuntime,
    WorkflowState,
    WorkflowStatus,
)
from engine.core.codec import to_json
from engine.core.errors import InstanceAlreadyRunningError, InstanceNotFoundError
from engine.core.events import (
    ExecutionCompleted,
    ExecutionStarted,
    ExecutionTerminated,
    WorkItem,
    encode,
    history_events,
)
from engine.core.state import InstanceRecord, decode_record, encode_record
from engine.worker.workflow_task import START_WAIT, START_WAIT_DELIVERIES


def echo_runtime(nats_url: str, prefix: str) -> WorkflowRuntime:
    """A runtime hosting ``echo``, which waits for the event "go" and returns its input; a
    failing workflow task is retried within half a second."""
    wfr = WorkflowRuntime(nats_url, prefix=prefix, stall_retry_max=timedelta(milliseconds=500))

    @wfr.workflow
    async def echo(ctx: WorkflowContext, x: str) -> str:
        await ctx.wait_for_external_event("go")
        return x

    return wfr


async def run_to_end(client: WorkflowClient, instance_id: str) -> str | None:
    """Let a started ``echo`` finish; its output."""
    await client.wait_for_workflow_start(instance_id, timeout=20)
    await client.raise_workflow_event(instance_id, "go")
    state = await client.wait_for_workflow_completion(instance_id, timeout=20)
    return state.serialized_output


async def stored_starts(broker: JetStreamBroker, instance_id: str) -> list[str]:
    """The inputs of every ``execution_started`` still stored in the instance's history."""
    events = history_events(item.data for item in await broker.load_history(instance_id))
    return [bytes(e.input).decode() for e in events if isinstance(e, ExecutionStarted)]


async def start_held_back(
    nats_url: str, prefix: str, client: WorkflowClient, broker: JetStreamBroker,
    instance_id: str, input: str, *, delay: float,
) -> None:
    """Start ``echo`` with no worker running, and hold its start back for ``delay`` seconds,
    as if it were slow to arrive."""
    async with echo_runtime(nats_url, prefix):
        pass  # creates the workflows consumer
    await client.schedule_new_workflow("echo", input=input, instance_id=instance_id)
    work = await broker.js.pull_subscribe_bind(
        durable=broker.subjects.workflows_consumer, stream=broker.subjects.work_stream
    )
    (start,) = await work.fetch(1, timeout=10)
    await start.nak(delay=delay)
    await work.unsubscribe()


class TestClientStart:
    async def test_first_task_is_appended_with_the_start(
        self, nats_url: str, prefix: str, client: WorkflowClient, broker: JetStreamBroker
    ) -> None:
        """Until a worker takes the start, the instance is PENDING with no history; then
        execution_started and the first task's events arrive in one append (one history
        message)."""
        await client.schedule_new_workflow("echo", input="a", instance_id="one-append")
        pending = await client.get_workflow_state("one-append")
        before = await broker.load_history("one-append")
        async with echo_runtime(nats_url, prefix):
            await client.wait_for_workflow_start("one-append", timeout=20)
        stored = await broker.load_history("one-append")
        kinds = [type(e).__name__ for e in history_events(item.data for item in stored)]
        assert pending is not None and WorkflowStatus.PENDING == pending.runtime_status
        assert [] == before
        assert ["ExecutionStarted", "WorkflowTaskStarted"] == kinds[:2]
        assert 1 == len(stored)

    async def test_concurrent_starts_of_one_id_run_once(
        self, nats_url: str, prefix: str, client: WorkflowClient, broker: JetStreamBroker
    ) -> None:
        """Of ten clients starting one id at once, one succeeds and nine are refused; the
        run has the winner's input."""
        results = await asyncio.gather(
            *[
                client.schedule_new_workflow("echo", input=f"in-{i}", instance_id="race")
                for i in range(10)
            ],
            return_exceptions=True,
        )
        refused = [r for r in results if isinstance(r, InstanceAlreadyRunningError)]
        winner = next(f'"in-{i}"' for i, r in enumerate(results) if r == "race")
        async with echo_runtime(nats_url, prefix):
            output = await run_to_end(client, "race")
        assert (9, winner) == (len(refused), output)
        assert [winner] == await stored_starts(broker, "race")

    async def test_start_not_yet_taken_refuses_another(
        self, nats_url: str, prefix: str, client: WorkflowClient
    ) -> None:
        """A second start of an id whose first start no worker has taken yet is refused."""
        await client.schedule_new_workflow("echo", input="first", instance_id="waiting")
        with pytest.raises(InstanceAlreadyRunningError, match="still running"):
            await client.schedule_new_workflow("echo", input="second", instance_id="waiting")
        async with echo_runtime(nats_url, prefix):
            assert '"first"' == await run_to_end(client, "waiting")

    async def test_new_run_replaces_the_finished_one(
        self, nats_url: str, prefix: str, client: WorkflowClient, broker: JetStreamBroker
    ) -> None:
        """Starting a finished id runs it again; the old run's history is dropped."""
        async with echo_runtime(nats_url, prefix):
            await client.schedule_new_workflow("echo", input="old", instance_id="again")
            first = await run_to_end(client, "again")
            await client.schedule_new_workflow("echo", input="new", instance_id="again")
            second = await run_to_end(client, "again")
        assert ('"old"', '"new"') == (first, second)
        assert ['"new"'] == await stored_starts(broker, "again")

    async def test_purged_id_starts_again(
        self, nats_url: str, prefix: str, client: WorkflowClient, broker: JetStreamBroker
    ) -> None:
        """An id purged right after it finished is free: starting it again (within the work
        stream's duplicate window of the first start) runs a new instance."""
        async with echo_runtime(nats_url, prefix):
            await client.schedule_new_workflow("echo", input="first", instance_id="reused")
            first = await run_to_end(client, "reused")
            await client.purge_workflow("reused")
            await client.schedule_new_workflow("echo", input="second", instance_id="reused")
            second = await run_to_end(client, "reused")
        assert ('"first"', '"second"') == (first, second)
        assert ['"second"'] == await stored_starts(broker, "reused")

    async def test_stale_start_is_ignored(
        self, nats_url: str, prefix: str, client: WorkflowClient, broker: JetStreamBroker
    ) -> None:
        """A start decided on an older history (its after_seq no longer the last sequence)
        does not begin a run; the next valid start does."""
        async with echo_runtime(nats_url, prefix):
            await client.schedule_new_workflow("echo", input="old", instance_id="stale")
            await run_to_end(client, "stale")
            stale = ExecutionStarted(
                timestamp=datetime.now(UTC), name="echo", execution_id="stale-run",
                input=to_json("stale"),
            )
            await broker.publish(
                broker.subjects.outbox_workflow("stale"),
                encode(WorkItem("stale", [stale], "stale-run", after_seq=1)),
            )
            await client.schedule_new_workflow("echo", input="valid", instance_id="stale")
            output = await run_to_end(client, "stale")
        assert '"valid"' == output
        assert ['"valid"'] == await stored_starts(broker, "stale")

    async def test_start_decided_on_empty_history_of_a_started_id_is_ignored(
        self, nats_url: str, prefix: str, client: WorkflowClient, broker: JetStreamBroker
    ) -> None:
        """A worker without the instance in its cache skips the history read for a start
        decided on an empty history; when the id has a run by then, the append conflicts and
        the start is recognised as a duplicate after reading."""
        async with echo_runtime(nats_url, prefix):
            await client.schedule_new_workflow("echo", input="first", instance_id="taken")
            await client.wait_for_workflow_start("taken", timeout=20)
        late = ExecutionStarted(
            timestamp=datetime.now(UTC), name="echo", execution_id="late-run",
            input=to_json("late"),
        )
        # The late start's own PENDING record, so that it is not dropped before the append.
        late_record = InstanceRecord(
            instance_id="taken", name="echo", status="PENDING", created_at=late.timestamp,
            last_updated_at=late.timestamp, execution_id="late-run",
        )
        await broker.put_record("taken", encode_record(late_record), 0, lambda _: 0)
        with structlog.testing.capture_logs() as logs:
            async with echo_runtime(nats_url, prefix):  # a fresh process: nothing cached
                await broker.publish(
                    broker.subjects.outbox_workflow("taken"),
                    encode(WorkItem("taken", [late], "late-run")),
                )
                # Raise only once the late start was handled on its own (not merged with it).
                async with asyncio.timeout(20):
                    while not _logged(logs, "start.duplicate_ignored", "taken"):
                        await asyncio.sleep(0.01)
                output = await run_to_end(client, "taken")
        assert '"first"' == output
        assert ['"first"'] == await stored_starts(broker, "taken")
        assert _logged(logs, "workflow.append_conflict", "taken")


def _logged(logs: list[dict[str, object]], event: str, instance_id: str) -> bool:
    return any(e["event"] == event and e.get("instance_id") == instance_id for e in logs)


class TestEventsBeforeTheStart:
    async def test_event_that_overtakes_the_start_waits_for_it(
        self, nats_url: str, prefix: str, client: WorkflowClient, broker: JetStreamBroker
    ) -> None:
        """An event raised right after a client start can reach a worker before the start
        does (the start travels through the history stream); it is delivered again until the
        run exists, not dead-lettered."""
        await start_held_back(nats_url, prefix, client, broker, "overtaken", "held", delay=3)
        await client.raise_workflow_event("overtaken", "go")
        async with echo_runtime(nats_url, prefix):
            state = await client.wait_for_workflow_completion("overtaken", timeout=30)
        assert '"held"' == state.serialized_output

    async def test_terminate_ends_a_start_that_never_came(
        self, nats_url: str, prefix: str, client: WorkflowClient, broker: JetStreamBroker
    ) -> None:
        """A PENDING record whose start was never sent (the starting client died in between)
        is ended by terminate; the id can then be started again."""
        now = datetime.now(UTC)
        orphan = InstanceRecord(
            instance_id="orphan", name="echo", status="PENDING", created_at=now,
            last_updated_at=now, execution_id="never-sent",
        )
        assert await broker.claim_record("orphan", encode_record(orphan), None) is not None
        async with echo_runtime(nats_url, prefix):
            await client.terminate_workflow("orphan", output="gone")
            ended = await client.wait_for_workflow_completion("orphan", timeout=40)
            await client.schedule_new_workflow("echo", input="again", instance_id="orphan")
            output = await run_to_end(client, "orphan")
        assert (WorkflowStatus.TERMINATED, '"gone"', '"again"') == (
            ended.runtime_status, ended.serialized_output, output
        )


    async def test_terminate_published_to_the_inbox_ends_a_run_without_history_at_once(
        self, nats_url: str, prefix: str, client: WorkflowClient, broker: JetStreamBroker
    ) -> None:
        """A terminate published straight to the inbox (a WorkItem as another language sends
        it, no client) of an instance whose record shows a run with no history ends that run
        in the first workflow task that takes it: the history records the run and its end.
        (Redelivered until a start that never comes was given up on, it would take at least
        START_WAIT * START_WAIT_DELIVERIES, longer than the guard.)"""
        assert START_WAIT * START_WAIT_DELIVERIES > 8
        now = datetime.now(UTC)
        orphan = InstanceRecord(
            instance_id="raw-stop", name="echo", status="PENDING", created_at=now,
            last_updated_at=now, execution_id="never-sent",
        )
        assert await broker.claim_record("raw-stop", encode_record(orphan), None) is not None
        body = (
            '{"instance_id": "raw-stop", "execution_id": "never-sent", "events": ['
            '{"type": "execution_terminated", "timestamp": "2026-01-02T03:04:05Z", '
            '"output": "stopped", "recursive": true}]}'
        )
        async with echo_runtime(nats_url, prefix):
            await broker.publish(broker.subjects.inbox("raw-stop"), body.encode())
            ended = await client.wait_for_workflow_completion("raw-stop", timeout=8)
        await assert_terminated_before_it_ran(client, ended, '"stopped"')

    async def test_terminate_that_overtakes_the_start_ends_the_run_and_the_start_runs_nothing(
        self, nats_url: str, prefix: str, client: WorkflowClient, broker: JetStreamBroker
    ) -> None:
        """A terminate sent to the inbox right after a client start, handled before the start
        arrives, ends the run; the start, arriving later, runs nothing."""
        await start_held_back(nats_url, prefix, client, broker, "outrun", "late", delay=2)
        stop = ExecutionTerminated(timestamp=datetime.now(UTC), output=to_json("early"))
        stored = await broker.get_record("outrun")
        assert stored is not None
        execution_id = decode_record(stored[0]).execution_id
        with structlog.testing.capture_logs() as logs:
            async with echo_runtime(nats_url, prefix):
                await broker.publish(
                    broker.subjects.inbox("outrun"),
                    encode(WorkItem("outrun", [stop], execution_id)),
                )
                ended = await client.wait_for_workflow_completion("outrun", timeout=20)
                async with asyncio.timeout(20):  # the held start comes back and is dropped
                    while not _logged(logs, "start.dropped", "outrun"):
                        await asyncio.sleep(0.05)
        await assert_terminated_before_it_ran(client, ended, '"early"')


async def assert_terminated_before_it_ran(
    client: WorkflowClient, ended: WorkflowState, output: str
) -> None:
    """``ended`` is TERMINATED with ``output``, and its history holds the run's start and its
    end, and no workflow task."""
    history = await client.get_history(ended.instance_id)
    assert (WorkflowStatus.TERMINATED, output) == (ended.runtime_status, ended.serialized_output)
    assert [ExecutionStarted, ExecutionTerminated, ExecutionCompleted] == [
        type(e) for e in history
    ]


async def wait_for_status(
    client: WorkflowClient, instance_id: str, status: WorkflowStatus
) -> WorkflowStatus:
    """Wait (by watching) until the instance shows ``status``."""
    state = await client._wait_until(instance_id, lambda s: s is status, 20, False)
    return state.runtime_status


class TestTerminateAndPurgeAnyInstance:
    """Terminate and purge work on every instance, whatever its state, with or without
    history."""

    async def test_instance_of_a_workflow_nobody_hosts_is_terminated_and_purged(
        self, nats_url: str, prefix: str, client: WorkflowClient
    ) -> None:
        """A start of a workflow no worker hosts stalls without history: its history is empty
        (not "no instance"), terminate ends it with a history that says so, purge removes it,
        and its start, still retried, does not bring it back."""
        async with echo_runtime(nats_url, prefix):
            await client.schedule_new_workflow("ecko", input="typo", instance_id="typo")
            stalled = await wait_for_status(client, "typo", WorkflowStatus.STALLED)
            before = await client.get_history("typo")
            await client.terminate_workflow("typo", output="wrong name")
            ended = await client.wait_for_workflow_completion("typo", timeout=20)
            history = await client.get_history("typo")
            purged = await client.purge_workflow("typo")
            await asyncio.sleep(1.5)  # the stalled start is delivered again meanwhile
            after = await client.get_workflow_state("typo")
            with pytest.raises(InstanceNotFoundError):
                await client.get_history("typo")
        assert (WorkflowStatus.STALLED, []) == (stalled, before)
        assert (WorkflowStatus.TERMINATED, '"wrong name"') == (
            ended.runtime_status, ended.serialized_output
        )
        kinds = [type(e) for e in history]
        assert [ExecutionStarted, ExecutionTerminated, ExecutionCompleted] == kinds
        assert (1, None) == (purged, after)

    async def test_stalled_instance_without_history_is_purged_directly(
        self, nats_url: str, prefix: str, client: WorkflowClient
    ) -> None:
        """Purge removes a STALLED instance that never ran, without a terminate first."""
        async with echo_runtime(nats_url, prefix):
            await client.schedule_new_workflow("ecko", instance_id="stuck")
            await wait_for_status(client, "stuck", WorkflowStatus.STALLED)
            purged = await client.purge_workflow("stuck")
            await asyncio.sleep(1.5)
            after = await client.get_workflow_state("stuck")
        assert (1, None) == (purged, after)

    async def test_running_instance_whose_workflow_is_no_longer_hosted_is_terminated(
        self, nats_url: str, prefix: str, client: WorkflowClient
    ) -> None:
        """An instance with history whose code no worker can run any more is terminated
        without running its code."""
        async with echo_runtime(nats_url, prefix):
            await client.schedule_new_workflow("echo", input="x", instance_id="orphaned")
            await client.wait_for_workflow_start("orphaned", timeout=20)
        other = WorkflowRuntime(nats_url, prefix=prefix)

        @other.workflow
        async def unrelated(ctx: WorkflowContext) -> None:
            return None

        async with other:
            await client.terminate_workflow("orphaned", output="gone")
            ended = await client.wait_for_workflow_completion("orphaned", timeout=20)
            history = await client.get_history("orphaned")
        assert (WorkflowStatus.TERMINATED, '"gone"') == (
            ended.runtime_status, ended.serialized_output
        )
        assert isinstance(history[-1], ExecutionCompleted)

    async def test_instance_terminated_and_purged_before_any_worker_ran_stays_gone(
        self, nats_url: str, prefix: str, client: WorkflowClient, broker: JetStreamBroker
    ) -> None:
        """With no worker running, terminate ends a PENDING instance at once and purge removes
        it; its start, taken by a worker later, runs nothing, and the id starts afresh."""
        async with echo_runtime(nats_url, prefix):
            pass  # creates the workflows consumer
        await client.schedule_new_workflow("echo", input="unwanted", instance_id="early")
        await client.terminate_workflow("early")
        ended = await client.wait_for_workflow_completion("early", timeout=5)
        await client.purge_workflow("early")
        await client.schedule_new_workflow("echo", input="wanted", instance_id="early")
        async with echo_runtime(nats_url, prefix):
            output = await run_to_end(client, "early")
        assert (WorkflowStatus.TERMINATED, '"wanted"') == (ended.runtime_status, output)
        assert ['"wanted"'] == await stored_starts(broker, "early")
