"""Payloads over the size threshold travel through the Object Store, referenced from history."""

from __future__ import annotations

import asyncio
import hashlib
import json

import msgspec
import nats
import pytest

from brokers import JetStreamBroker, Subjects
from brokers._payload_store import REF_KEY, PayloadRef, payload_ref
from engine import WorkflowClient, WorkflowContext, WorkflowRuntime, WorkflowStatus
from engine.core.events import encode, history_events

TEN_MB = 10 * 1024 * 1024
THRESHOLD = 64 * 1024


def blob(size: int, seed: str = "x") -> str:
    """A string whose JSON is about ``size`` bytes and differs per seed."""
    unit = hashlib.sha256(seed.encode()).hexdigest()
    return (unit * (size // len(unit) + 1))[:size]


async def stored_history(nats_url: str, prefix: str, instance_id: str) -> list[bytes]:
    """The events of an instance's history, each as stored (raw JSON)."""
    nc = await nats.connect(nats_url)
    try:
        stored = await JetStreamBroker(nc, Subjects(prefix)).load_history(instance_id)
    finally:
        await nc.close()
    return [encode(event) for event in history_events(item.data for item in stored)]


async def object_names(nats_url: str, prefix: str) -> set[str]:
    """Names of the (not deleted) objects in the prefix's payload bucket."""
    nc = await nats.connect(nats_url)
    try:
        store = await nc.jetstream().object_store(f"{prefix}_payloads")
        try:
            return {info.name for info in await store.list(ignore_deletes=True)}
        except nats.js.errors.NotFoundError:
            return set()
    finally:
        await nc.close()


class WaitingWorkflow:
    """``waits``: gets a large value from an activity, then waits for the event ``go``.

    Each ``runtime()`` is a fresh worker (an empty cache); ``seen`` records the value's length
    each time the workflow code passes the activity, ``produced`` is set the first time.
    """

    def __init__(self, nats_url: str, prefix: str, value: str) -> None:
        self.nats_url, self.prefix, self.value = nats_url, prefix, value
        self.seen: list[int] = []
        self.produced = asyncio.Event()

    def runtime(self) -> WorkflowRuntime:
        wfr = WorkflowRuntime(self.nats_url, prefix=self.prefix, large_payload_threshold=THRESHOLD)

        @wfr.activity
        async def produce(ctx) -> str:
            return self.value

        @wfr.workflow
        async def waits(ctx: WorkflowContext) -> int:
            data = await ctx.call_activity(produce)
            self.seen.append(len(data))
            self.produced.set()
            await ctx.wait_for_external_event("go")
            return len(data)

        return wfr


class TestLargePayloads:
    async def test_ten_megabyte_activity_result(self, nats_url, prefix):
        """A 10 MB activity result reaches the workflow and the client; history holds refs."""
        wfr = WorkflowRuntime(nats_url, prefix=prefix)
        big = blob(TEN_MB)

        @wfr.activity
        async def produce(ctx) -> str:
            return big

        @wfr.workflow
        async def relay(ctx: WorkflowContext) -> str:
            data = await ctx.call_activity(produce)
            return data + "!"

        async with wfr, await WorkflowClient.connect(nats_url, prefix=prefix) as client:
            iid = await client.schedule_new_workflow(relay)
            state = await client.wait_for_workflow_completion(iid, timeout=60)
            history = await client.get_history(iid)
        assert WorkflowStatus.COMPLETED == state.runtime_status, state.failure_details
        assert json.loads(state.serialized_output) == big + "!"
        completed = next(e for e in history if type(e).__name__ == "TaskCompleted")
        assert msgspec.json.decode(bytes(completed.result)) == big
        raw = await stored_history(nats_url, prefix, iid)
        assert max(len(m) for m in raw) < 4096, "large values are not inline in history"
        refs = [m for m in raw if REF_KEY.encode() in m]
        assert 2 == len(refs), "the activity result and the workflow output are references"

    async def test_large_inputs_events_and_children(self, nats_url, prefix):
        """Over the threshold: the start input, an activity input, raised event data and a
        child's result, all round trip exactly."""
        wfr = WorkflowRuntime(nats_url, prefix=prefix, large_payload_threshold=THRESHOLD)
        start_in, event_in = blob(200_000, "start"), blob(300_000, "event")

        @wfr.activity
        async def measure(ctx, text: str) -> int:
            return len(text)

        @wfr.workflow
        async def child(ctx: WorkflowContext, text: str) -> str:
            return text[::-1]

        @wfr.workflow
        async def parent(ctx: WorkflowContext, text: str) -> list[int]:
            n = await ctx.call_activity(measure, input=text + text)
            data = await ctx.wait_for_external_event("more")
            reversed_ = await ctx.call_child_workflow(child, input=data)
            return [n, len(data), int(reversed_ == data[::-1])]

        async with wfr, await WorkflowClient.connect(
            nats_url, prefix=prefix, large_payload_threshold=THRESHOLD
        ) as client:
            iid = await client.schedule_new_workflow(parent, input=start_in)
            await client.wait_for_workflow_start(iid, timeout=30)
            await client.raise_workflow_event(iid, "more", data=event_in)
            state = await client.wait_for_workflow_completion(iid, timeout=60)
        assert WorkflowStatus.COMPLETED == state.runtime_status, state.failure_details
        assert [400_000, 300_000, 1] == json.loads(state.serialized_output)
        assert json.loads(state.serialized_input) == start_in
        raw = await stored_history(nats_url, prefix, iid)
        assert max(len(m) for m in raw) < 4096

    async def test_replay_from_history_resolves_references(self, nats_url, prefix):
        """A worker without the instance in its cache replays it with the stored values."""
        waiting = WaitingWorkflow(nats_url, prefix, blob(500_000, "replay"))
        async with await WorkflowClient.connect(nats_url, prefix=prefix) as client:
            async with waiting.runtime():
                iid = await client.schedule_new_workflow("waits")
                await waiting.produced.wait()
            async with waiting.runtime():  # a fresh worker: its cache is empty
                await client.raise_workflow_event(iid, "go")
                state = await client.wait_for_workflow_completion(iid, timeout=30)
        assert "500000" == state.serialized_output
        assert [500_000, 500_000] == waiting.seen, "the second worker replayed the full value"

    async def test_missing_object_stalls_with_a_clear_error(self, nats_url, prefix):
        """If a referenced object is gone, the instance is STALLED with an error naming it."""
        waiting = WaitingWorkflow(nats_url, prefix, blob(200_000, "gone"))
        async with await WorkflowClient.connect(nats_url, prefix=prefix) as client:
            async with waiting.runtime():
                iid = await client.schedule_new_workflow("waits")
                await waiting.produced.wait()
            nc = await nats.connect(nats_url)
            store = await nc.jetstream().object_store(f"{prefix}_payloads")
            for name in await object_names(nats_url, prefix):
                await store.delete(name)
            await nc.close()
            async with waiting.runtime():
                await client.raise_workflow_event(iid, "go")
                state = await client._wait_until(
                    iid, lambda s: s is WorkflowStatus.STALLED, 30, fetch_payloads=False
                )
        assert "PayloadMissingError" == state.failure_details.type
        assert f"{iid}/" in state.failure_details.message
        assert "purged or never stored" in state.failure_details.message

    async def test_purge_deletes_the_instance_objects(self, nats_url, prefix, client):
        """Purging an instance removes the payload objects it stored."""
        wfr = WorkflowRuntime(nats_url, prefix=prefix, large_payload_threshold=THRESHOLD)

        @wfr.activity
        async def produce(ctx, seed: str) -> str:
            return blob(100_000, seed)

        @wfr.workflow
        async def two(ctx: WorkflowContext, seed: str) -> int:
            a = await ctx.call_activity(produce, input=seed)
            return len(a)

        async with wfr:
            first = await client.schedule_new_workflow(two, input="a")
            second = await client.schedule_new_workflow(two, input="b")
            for iid in (first, second):
                await client.wait_for_workflow_completion(iid, timeout=30)
        names = await object_names(nats_url, prefix)
        assert {first, second} == {n.split("/")[0] for n in names}
        assert 1 == await client.purge_workflow(first)
        assert {second} == {n.split("/")[0] for n in await object_names(nats_url, prefix)}

    async def test_continue_as_new_drops_the_old_runs_objects(self, nats_url, prefix, client):
        """A run's large payloads go with its history when it continues as new."""
        wfr = WorkflowRuntime(nats_url, prefix=prefix, large_payload_threshold=THRESHOLD)

        @wfr.activity
        async def produce(ctx, n: int) -> str:
            return blob(100_000, f"round-{n}")

        @wfr.workflow
        async def rounds(ctx: WorkflowContext, n: int) -> int:
            data = await ctx.call_activity(produce, input=n)
            if n < 3:
                ctx.continue_as_new(n + 1)
                return 0
            return len(data)

        async with wfr:
            iid = await client.schedule_new_workflow(rounds, input=1)
            state = await client.wait_for_workflow_completion(iid, timeout=30)
        assert "100000" == state.serialized_output
        names = await object_names(nats_url, prefix)
        last = hashlib.sha256(json.dumps(blob(100_000, "round-3")).encode()).hexdigest()
        assert {f"{iid}/{last}"} == names, "only the last run's payload is kept"

    async def test_a_start_from_another_service_may_carry_a_reference(self, nats_url, prefix):
        """Another language puts a value in the bucket and starts with its reference; a start
        with a large inline input is offloaded by the worker."""
        wfr = WorkflowRuntime(nats_url, prefix=prefix, large_payload_threshold=THRESHOLD)

        @wfr.workflow
        async def size(ctx: WorkflowContext, text: str) -> int:
            return len(text)

        value = json.dumps(blob(2_000_000, "foreign")).encode()
        async with wfr, await WorkflowClient.connect(nats_url, prefix=prefix) as client:
            nc = await nats.connect(nats_url)
            js = nc.jetstream()
            store = await js.object_store(f"{prefix}_payloads")
            await store.put("uploads/order-7", value)
            ref = {
                REF_KEY: {
                    "bucket": f"{prefix}_payloads",
                    "name": "uploads/order-7",
                    "size": len(value),
                    "sha256": hashlib.sha256(value).hexdigest(),
                }
            }
            body = json.dumps({"instance_id": "foreign-1", "input": ref}).encode()
            await js.publish(f"{prefix}.start.size", body)
            inline = json.dumps({"instance_id": "foreign-2", "input": blob(500_000)}).encode()
            await js.publish(f"{prefix}.start.size", inline)
            await nc.close()
            state = await client.wait_for_workflow_completion("foreign-1", timeout=30)
            inline_state = await client.wait_for_workflow_completion("foreign-2", timeout=30)
        assert WorkflowStatus.COMPLETED == state.runtime_status, state.failure_details
        assert "2000000" == state.serialized_output
        assert "500000" == inline_state.serialized_output
        raw = await stored_history(nats_url, prefix, "foreign-2")
        assert max(len(m) for m in raw) < 4096, "an inline start over the threshold is offloaded"


class TestReferences:
    def test_a_reference_is_recognised(self):
        ref = PayloadRef(bucket="b", name="i/abc", size=10, sha256="abc")
        raw = msgspec.json.encode({REF_KEY: ref})
        assert ref == payload_ref(raw)
        assert ref == payload_ref(msgspec.Raw(raw))

    @pytest.mark.parametrize(
        "raw",
        [
            b"null",
            b'"$jetloom_payload"',
            b'{"$jetloom_payload": 1}',
            b'{"$jetloom_payload": {"bucket": "b"}}',
            b'{"$jetloom_payload": {"bucket": "b", "name": "n", "size": 1, "sha256": "x"},'
            b' "other": 1}',
            b'{"$jetloom_payload": {"bucket": "b", "name": "n", "size": 1, "sha256": "x"}'
            + b" " * 2000,
        ],
    )
    def test_other_values_are_not_references(self, raw):
        assert payload_ref(raw) is None

    def test_threshold_must_leave_room_for_a_reference(self):
        with pytest.raises(ValueError, match="at least 1024 bytes"):
            WorkflowRuntime(large_payload_threshold=100)
