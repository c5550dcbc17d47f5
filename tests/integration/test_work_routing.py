"""How work reaches the workflows consumer, on new and on earlier work streams."""

from __future__ import annotations

import json
from datetime import timedelta

from brokers import Subjects, connect_nats
from engine import WorkflowClient, WorkflowRuntime, WorkflowStatus


def _runtime(nats_url: str, prefix: str) -> WorkflowRuntime:
    wfr = WorkflowRuntime(nats_url, prefix=prefix)

    @wfr.activity
    async def inc(ctx, x: int) -> int:
        return x + 1

    @wfr.workflow
    async def flow(ctx, x: int) -> int:
        y = await ctx.call_activity(inc, input=x)
        await ctx.create_timer(timedelta(milliseconds=200))
        return await ctx.call_activity(inc, input=y)

    return wfr


async def _consumer_filters(nats_url: str, prefix: str) -> list[str]:
    nc = await connect_nats(nats_url)
    try:
        s = Subjects(prefix)
        reply = await nc.request(f"$JS.API.CONSUMER.INFO.{s.work_stream}.workflows", b"")
        config = json.loads(reply.data)["config"]
        return config.get("filter_subjects") or [config["filter_subject"]]
    finally:
        await nc.close()


class TestWorkRouting:
    async def test_new_streams_route_work_to_inboxes(self, nats_url, prefix, client):
        """On a new work stream the workflows consumer has the single filter <p>.*.*, and
        activity results, timers and start triggers all reach it."""
        async with _runtime(nats_url, prefix):
            iid = await client.schedule_new_workflow("flow", input=1)
            state = await client.wait_for_workflow_completion(iid, timeout=20)
        assert (WorkflowStatus.COMPLETED, "3") == (state.runtime_status, state.serialized_output)
        assert [f"{prefix}.*.*"] == await _consumer_filters(nats_url, prefix)

    async def test_an_earlier_work_stream_keeps_its_routing(self, nats_url, prefix):
        """A work stream created before inbox routing (sourcing <p>.outbox.> unchanged) is
        left as it is, and the workflows consumer keeps the filters that match it."""
        s = Subjects(prefix)
        nc = await connect_nats(nats_url)
        try:
            for config in (
                {"name": s.history_stream, "storage": "file", "allow_atomic": True,
                 "allow_msg_ttl": True, "allow_msg_schedules": True, "allow_direct": True,
                 "duplicate_window": 120_000_000_000,
                 "subjects": [f"{prefix}.history.*", f"{prefix}.outbox.>", f"{prefix}.timer.>"]},
                {"name": s.work_stream, "storage": "file", "retention": "workqueue",
                 "duplicate_window": 120_000_000_000,
                 "subjects": [f"{prefix}.start.*", f"{prefix}.inbox.*"],
                 "sources": [{"name": s.history_stream, "filter_subject": f"{prefix}.outbox.>"}]},
            ):
                reply = await nc.request(
                    f"$JS.API.STREAM.CREATE.{config['name']}", json.dumps(config).encode()
                )
                assert "error" not in json.loads(reply.data)
        finally:
            await nc.close()
        client = await WorkflowClient.connect(nats_url, prefix=prefix)
        try:
            async with _runtime(nats_url, prefix):
                iid = await client.schedule_new_workflow("flow", input=1)
                state = await client.wait_for_workflow_completion(iid, timeout=20)
        finally:
            await client.close()
        assert (WorkflowStatus.COMPLETED, "3") == (state.runtime_status, state.serialized_output)
        assert [s.workflow_work_unrouted] == [await _consumer_filters(nats_url, prefix)]
