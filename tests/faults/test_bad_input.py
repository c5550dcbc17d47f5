"""Bad input never crashes a worker nor disappears: callers get errors, the rest is
dead-lettered with a reason."""

from __future__ import annotations

import json

import nats
import pytest
from faultkit import stream_messages, wait_consumer_drained

from brokers._server import EmbeddedNatsServer
from engine import WorkflowClient, WorkflowStatus
from engine.core.errors import (
    InstanceAlreadyRunningError,
    InstanceFinishedError,
    InstanceNotFoundError,
)


async def _reasons(nc, prefix: str, count: int) -> list[str]:
    """The Jetloom-Reason headers of the first ``count`` dead letters."""
    js = nc.jetstream()
    out = []
    for seq in range(1, count + 1):
        msg = await js.get_msg(f"{prefix.upper()}_DEADLETTER", seq)
        out.append(msg.headers["Jetloom-Reason"])
    return out


class TestBadStartEvents:
    """Start events that cannot be used are dead-lettered with the reason."""

    async def test_each_bad_start_is_dead_lettered_and_the_worker_goes_on(
        self, nats_url, prefix, client, workers
    ):
        """Not JSON, wrong shape, bad id and unknown workflow each give one dead letter with
        its reason; a duplicate start of a running id is ignored; a good start completes."""
        orch = await workers.spawn(nats_url, prefix, "orch", "--workflows")
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        try:
            await js.publish(f"{prefix}.start.echo", b"{not json")
            await js.publish(f"{prefix}.start.echo", b'{"instance_id": 5}')
            await js.publish(f"{prefix}.start.echo", b'{"instance_id": "bad id!"}')
            await js.publish(f"{prefix}.start.nope", b'{"input": 1}')
            await js.publish(f"{prefix}.start.echo", b'{"instance_id": "e-1", "input": 1}')
            await js.publish(f"{prefix}.start.echo", b'{"instance_id": "e-1", "input": 2}')
            done = await client.wait_for_workflow_completion("e-1", timeout=20)
            assert "1" == done.serialized_output
            # The duplicate may come in a later pull than the first start: wait until every
            # start event has been handled.
            await wait_consumer_drained(nats_url, prefix, "workflows")
            history = await client.get_history("e-1")
            reasons = await _reasons(nc, prefix, 4)
            assert 4 == await stream_messages(nc, f"{prefix.upper()}_DEADLETTER")
        finally:
            await nc.close()
        assert reasons[0].startswith("start event is not valid JSON")
        assert reasons[1].startswith("start event has the wrong shape")
        assert reasons[2].startswith("invalid instance id 'bad id!'")
        assert reasons[3].startswith("unknown workflow 'nope'")
        assert orch.alive
        assert 1 <= orch.count_log("start.duplicate_ignored")
        assert 1 == sum(type(e).__name__ == "ExecutionStarted" for e in history), "one run"
        with pytest.raises(InstanceAlreadyRunningError):
            await client.schedule_new_workflow("saga", input={"base": 1}, instance_id="s-run")
            await client.schedule_new_workflow("saga", input={"base": 1}, instance_id="s-run")

    async def test_input_not_matching_type_hints_fails_naming_the_field(
        self, nats_url, prefix, client, workers
    ):
        """An input that does not decode to the workflow's Order type FAILS the instance with
        an error naming the field."""
        await workers.spawn(nats_url, prefix, "orch", "--workflows")
        iid = await client.schedule_new_workflow("typed", input={"sku": 5, "qty": 1})
        state = await client.wait_for_workflow_completion(iid, timeout=20)
        assert WorkflowStatus.FAILED is state.runtime_status
        assert "sku" in state.failure_details.message

    async def test_garbage_on_the_inbox_is_dead_lettered(self, nats_url, prefix, client, workers):
        """A body that is not a WorkItem on an instance's inbox is dead-lettered as 'inbox'."""
        orch = await workers.spawn(nats_url, prefix, "orch", "--workflows")
        iid = await client.schedule_new_workflow("echo", input=1, instance_id="inb-1")
        await client.wait_for_workflow_completion(iid, timeout=20)
        nc = await nats.connect(nats_url)
        try:
            await nc.jetstream().publish(f"{prefix}.inbox.inb-1", b"\xff\x00garbage")
            again = await client.schedule_new_workflow("echo", input=2, instance_id="inb-2")
            await client.wait_for_workflow_completion(again, timeout=20)
            reasons = await _reasons(nc, prefix, 1)
        finally:
            await nc.close()
        assert reasons[0].startswith("work item is not a valid WorkItem")
        assert orch.alive


class TestClientErrors:
    """The client refuses what cannot work, with a clear exception."""

    async def test_unknown_instances_raise_instance_not_found(self, client):
        """Raising an event to, terminating and purging an unknown id raise
        InstanceNotFoundError."""
        with pytest.raises(InstanceNotFoundError):
            await client.raise_workflow_event("nobody", "approval", data=1)
        with pytest.raises(InstanceNotFoundError):
            await client.terminate_workflow("nobody")
        with pytest.raises(InstanceNotFoundError):
            await client.purge_workflow("nobody")

    async def test_event_for_a_finished_instance_is_dropped(
        self, nats_url, prefix, client, workers
    ):
        """Raising an event to a COMPLETED instance raises InstanceFinishedError and leaves its
        history as it was."""
        orch = await workers.spawn(nats_url, prefix, "orch", "--workflows")
        iid = await client.schedule_new_workflow("echo", input=1, instance_id="fin-1")
        await client.wait_for_workflow_completion(iid, timeout=20)
        before = await client.get_history(iid)
        with pytest.raises(InstanceFinishedError):
            await client.raise_workflow_event(iid, "late", data=1)
        probe = await client.schedule_new_workflow("echo", input=2, instance_id="fin-2")
        await client.wait_for_workflow_completion(probe, timeout=20)
        assert before == await client.get_history(iid)
        assert WorkflowStatus.COMPLETED is (await client.get_workflow_state(iid)).runtime_status
        assert orch.alive


class TestMaxPayload:
    """Messages above the server's max_payload are refused to the publisher."""

    async def test_oversized_start_is_refused_to_the_publisher(self, tmp_path, workers):
        """A start event over max_payload fails at the publisher with a clear error; the worker
        is unaffected and a normal start completes."""
        with EmbeddedNatsServer(store_dir=tmp_path / "store", max_payload=65536) as server:
            prefix = "maxp"
            orch = await workers.spawn(server.url, prefix, "orch", "--workflows")
            nc = await nats.connect(server.url)
            client = await WorkflowClient.connect(server.url, prefix=prefix)
            try:
                body = json.dumps({"input": "x" * 70_000}).encode()
                with pytest.raises(nats.errors.MaxPayloadError):
                    await nc.jetstream().publish(f"{prefix}.start.echo", body)
                with pytest.raises(nats.errors.MaxPayloadError):
                    await client.schedule_new_workflow("echo", input="x" * 70_000)
                iid = await client.schedule_new_workflow("echo", input="ok")
                state = await client.wait_for_workflow_completion(iid, timeout=20)
            finally:
                await client.close()
                await nc.close()
            assert '"ok"' == state.serialized_output
            assert orch.alive
            await workers.stop_all()

    async def test_start_that_fits_but_its_history_event_does_not(self, tmp_path, workers):
        """A start event just under max_payload is dead-lettered (or fails visibly) rather than
        redelivered forever."""
        with EmbeddedNatsServer(store_dir=tmp_path / "store", max_payload=65536) as server:
            prefix = "maxq"
            await workers.spawn(server.url, prefix, "orch", "--workflows")
            nc = await nats.connect(server.url)
            client = await WorkflowClient.connect(server.url, prefix=prefix)
            try:
                body = json.dumps({"instance_id": "big-1", "input": "x" * 65_400}).encode()
                assert len(body) < 65536
                await nc.jetstream().publish(f"{prefix}.start.echo", body)
                probe = await client.schedule_new_workflow("echo", input="ok")
                await client.wait_for_workflow_completion(probe, timeout=20)
                state = await client.get_workflow_state("big-1")
                dead = await stream_messages(nc, f"{prefix.upper()}_DEADLETTER")
            finally:
                await client.close()
                await nc.close()
            await workers.stop_all()
        assert state is not None or 1 == dead
