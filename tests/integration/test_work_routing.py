"""How work reaches the workflows consumer, on new and on earlier work streams."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from brokers import Subjects, connect_nats
from engine import (
    RetentionPolicy,
    TaskFailedError,
    TaskScheduled,
    WorkflowClient,
    WorkflowRuntime,
    WorkflowStatus,
)
from engine.worker import activities


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
            await _create_earlier_streams(
                nc, s, {"name": s.history_stream, "filter_subject": f"{prefix}.outbox.>"}
            )
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


def _app_runtime(nats_url: str, prefix: str, app: str) -> WorkflowRuntime:
    """A runtime of application ``app`` hosting workflows that say which app ran them."""
    wfr = WorkflowRuntime(nats_url, prefix=prefix, app_id=app, task_queues=[app])

    @wfr.activity(name="where")
    async def where(ctx) -> str:
        return app

    @wfr.workflow(name="flow")
    async def flow(ctx, x: int) -> list:
        await ctx.create_timer(timedelta(milliseconds=100))
        here = await ctx.call_activity("where", task_queue=app)
        other = "a" if app == "b" else "b"
        child = await ctx.call_child_workflow("leaf", input=x, app_id=other)
        event = await ctx.wait_for_external_event("go")
        return [ctx.app_id, here, child, event]

    @wfr.workflow(name="leaf")
    async def leaf(ctx, x: int) -> str:
        return f"leaf {x} in {ctx.app_id}"

    return wfr


class TestApplications:
    async def test_work_reaches_only_its_application(self, nats_url, prefix):
        """Two applications host workflows of the same names: each instance, its timers,
        activity results, events and the children it calls in the other application are
        handled by the runtimes of the application they are addressed to."""
        client = await WorkflowClient.connect(nats_url, prefix=prefix, app_id="")
        try:
            async with _app_runtime(nats_url, prefix, "a"), _app_runtime(nats_url, prefix, "b"):
                first = await client.schedule_new_workflow("flow", input=1, app_id="a")
                second = await client.schedule_new_workflow("flow", input=2, app_id="b")
                states = []
                for iid in (first, second):
                    await client.wait_for_workflow_status(iid, {WorkflowStatus.RUNNING})
                    await client.raise_workflow_event(iid, "go", data="went")
                    states.append(await client.wait_for_workflow_completion(iid, timeout=20))
        finally:
            await client.close()
        assert [
            '["a","a","leaf 1 in b","went"]', '["b","b","leaf 2 in a","went"]'
        ] == [s.serialized_output for s in states]

    async def test_default_runtime_leaves_application_work_alone(self, nats_url, prefix,
                                                                  client):
        """A runtime without an application id does not take an application's start, and
        an application's runtime takes its start events from <p>.app.<app>.start.<name>."""
        async with _runtime(nats_url, prefix):
            iid = await client.schedule_new_workflow("flow", input=1, app_id="elsewhere")
            with pytest.raises(TimeoutError):
                await client.wait_for_workflow_start(iid, timeout=1)
        nc = await connect_nats(nats_url)
        try:
            await nc.request(Subjects(prefix).start("leaf", "b"),
                             b'{"instance_id": "by-subject", "input": 5}')
        finally:
            await nc.close()
        async with _app_runtime(nats_url, prefix, "b"):
            state = await client.wait_for_workflow_completion("by-subject", timeout=20)
        assert '"leaf 5 in b"' == state.serialized_output

    async def test_an_existing_work_stream_gains_the_application_source(self, nats_url,
                                                                         prefix):
        """A work stream created before applications keeps its source (and its position:
        nothing is sourced twice) and gains a second one for applications' work."""
        s = Subjects(prefix)
        nc = await connect_nats(nats_url)
        try:
            await _create_earlier_streams(
                nc, s, {"name": s.history_stream, "subject_transforms": s.work_routing}
            )
            js = nc.jetstream()
            await js.publish(s.outbox_workflow("old"), b"{}")
            work = await js.pull_subscribe(s.inbox("old"), durable="drain", stream=s.work_stream)
            (msg,) = await work.fetch(1, timeout=5)
            await msg.ack_sync()
            await js.delete_consumer(s.work_stream, "drain")
            async with _app_runtime(nats_url, prefix, "a"):
                await asyncio.sleep(0.5)
            info = json.loads((await nc.request(
                f"$JS.API.STREAM.INFO.{s.work_stream}", b""
            )).data)
        finally:
            await nc.close()
        assert (0, [s.work_routing, s.app_work_routing]) == (
            info["state"]["messages"],
            [source["subject_transforms"] for source in info["config"]["sources"]],
        )


class TestUnhostedActivities:
    async def test_a_task_nobody_hosts_is_dead_lettered_and_fails(
        self, nats_url, prefix, client, monkeypatch
    ):
        """A task for an activity no runtime of its queue hosts is handed back until it is
        older than the limit; then it lands on <p>.deadletter.activity with the reason and
        the attempt fails in the workflow with ActivityNotRegisteredError."""
        monkeypatch.setattr(activities, "UNHOSTED_LIMIT", timedelta(seconds=1))
        wfr = WorkflowRuntime(nats_url, prefix=prefix)

        @wfr.activity
        async def present(ctx) -> str:
            return "here"

        @wfr.workflow
        async def calls_absent(ctx) -> str:
            try:
                return await ctx.call_activity("absent")
            except TaskFailedError as exc:
                return exc.failure_details.type

        async with wfr:
            iid = await client.schedule_new_workflow(calls_absent)
            state = await client.wait_for_workflow_completion(iid, timeout=20)
        nc = await connect_nats(nats_url)
        try:
            s = Subjects(prefix)
            dead = await nc.jetstream().get_last_msg(s.deadletter_stream, s.deadletter("activity"))
        finally:
            await nc.close()
        assert '"ActivityNotRegisteredError"' == state.serialized_output
        assert "hosts activity 'absent'" in dead.headers["Jetloom-Reason"]
        assert f"{prefix}.outbox.activity.default" == dead.headers["Jetloom-Original-Subject"]


class TestTaskQueues:
    async def test_an_activity_knows_the_task_queue_it_was_taken_from(
        self, nats_url, prefix, client
    ):
        """One runtime serving several task queues runs an activity called on each; the
        activity's ctx.task_queue names the queue of its call."""
        wfr = WorkflowRuntime(nats_url, prefix=prefix, task_queues=["default", "east", "west"])

        @wfr.activity
        async def queue_of(ctx) -> str:
            return ctx.task_queue

        @wfr.workflow
        async def ask_each(ctx) -> list:
            return [
                await ctx.call_activity(queue_of, task_queue=queue)
                for queue in ("east", "west", None)
            ]

        async with wfr:
            iid = await client.schedule_new_workflow(ask_each)
            state = await client.wait_for_workflow_completion(iid, timeout=20)
        assert '["east","west","default"]' == state.serialized_output


def _lifecycle_runtime(nats_url: str, prefix: str, app: str, **options: object
                       ) -> WorkflowRuntime:
    """The only runtime of the test, of application ``app``: work addressed to the default
    application would wait for ever."""
    wfr = WorkflowRuntime(nats_url, prefix=prefix, app_id=app, task_queues=[app],
                          **options)  # type: ignore[arg-type]

    @wfr.activity(name="step")
    async def step(ctx, x: int) -> int:
        return x + 1

    @wfr.workflow(name="twice")
    async def twice(ctx, n: int) -> str:
        if n < 1:
            ctx.continue_as_new(n + 1)
            return ""
        return ctx.app_id

    @wfr.workflow(name="tick")
    async def tick(ctx) -> str:
        return ctx.app_id

    @wfr.workflow(name="steps")
    async def steps(ctx, x: int) -> list:
        y = await ctx.call_activity("step", input=x, task_queue=app)
        return [y, await ctx.wait_for_external_event("go")]

    return wfr


class TestApplicationsLifecycle:
    async def test_continue_as_new_retention_and_schedules_stay_in_the_application(
        self, nats_url, prefix
    ):
        """A run continued as new, the purge its retention schedules and the instances a
        recurring schedule starts are all addressed to the instance's application."""
        client = await WorkflowClient.connect(nats_url, prefix=prefix, app_id="a")
        try:
            async with _lifecycle_runtime(
                nats_url, prefix, "a",
                retention=RetentionPolicy(completed=timedelta(seconds=1)),
            ):
                iid = await client.schedule_new_workflow("twice", input=0)
                state = await client.wait_for_workflow_completion(iid, timeout=20)
                assert '"a"' == state.serialized_output
                for _ in range(150):
                    if await client.get_workflow_state(iid) is None:
                        break
                    await asyncio.sleep(0.2)
                assert await client.get_workflow_state(iid) is None

                await client.create_schedule("every-second", "tick", every=timedelta(seconds=1))
                for _ in range(150):
                    [schedule] = await client.list_schedules()
                    if schedule.last_instance_id:
                        break
                    await asyncio.sleep(0.2)
                await client.pause_schedule("every-second")
                fired = await client.wait_for_workflow_completion(
                    schedule.last_instance_id, timeout=20
                )
                assert '"a"' == fired.serialized_output
        finally:
            await client.close()

    async def test_a_rerun_takes_events_in_its_application(self, nats_url, prefix):
        """The record of a rerun names the source's application, so events reach it."""
        client = await WorkflowClient.connect(nats_url, prefix=prefix, app_id="a")
        try:
            async with _lifecycle_runtime(nats_url, prefix, "a"):
                source = await client.schedule_new_workflow("steps", input=1)
                await client.wait_for_workflow_status(source, {WorkflowStatus.RUNNING})
                await client.raise_workflow_event(source, "go", data="first")
                await client.wait_for_workflow_completion(source, timeout=20)
                [event_id] = [i for i, e in enumerate(await client.get_history(source))
                              if isinstance(e, TaskScheduled)]
                rerun = await client.rerun_workflow_from_event(
                    source, event_id, input=10, overwrite_input=True
                )
                await client.wait_for_workflow_status(rerun, {WorkflowStatus.RUNNING})
                await client.raise_workflow_event(rerun, "go", data="again")
                state = await client.wait_for_workflow_completion(rerun, timeout=20)
        finally:
            await client.close()
        assert '[11,"again"]' == state.serialized_output


async def _create_earlier_streams(nc: NATS, s: Subjects, source: dict[str, Any]) -> None:
    """The history and work streams as an earlier release created them, the work stream
    sourcing the history stream through ``source``."""
    prefix = s.prefix
    for config in (
        {"name": s.history_stream, "storage": "file", "allow_atomic": True,
         "allow_msg_ttl": True, "allow_msg_schedules": True, "allow_direct": True,
         "duplicate_window": 120_000_000_000,
         "subjects": [f"{prefix}.history.*", f"{prefix}.outbox.>", f"{prefix}.timer.>"]},
        {"name": s.work_stream, "storage": "file", "retention": "workqueue",
         "duplicate_window": 120_000_000_000,
         "subjects": [f"{prefix}.start.*", f"{prefix}.inbox.*"],
         "sources": [source]},
    ):
        reply = await nc.request(
            f"$JS.API.STREAM.CREATE.{config['name']}", json.dumps(config).encode()
        )
        assert "error" not in json.loads(reply.data)
