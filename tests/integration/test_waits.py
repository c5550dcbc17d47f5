"""Waiting for instances: every wait returns, and all waits of a client share one watch."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from brokers import EmbeddedNatsServer, JetStreamBroker, free_port
from brokers._server import NatsCluster
from engine import WorkflowClient, WorkflowContext, WorkflowRuntime, WorkflowStatus, when_all
from engine.core.errors import InstanceNotFoundError


def quick_runtime(nats_url: str, prefix: str, *, replicas: int = 1) -> WorkflowRuntime:
    """A runtime hosting short workflows of the activity ``inc`` (x -> x + 1): ``one_step``,
    ``chain3`` (three in a row), ``saga`` (three in parallel, then one), and ``gate``, which
    returns its input once the event "go" arrives."""
    wfr = WorkflowRuntime(nats_url, prefix=prefix, replicas=replicas)

    @wfr.activity
    async def inc(ctx: object, x: int) -> int:
        return x + 1

    @wfr.workflow
    async def one_step(ctx: WorkflowContext, x: int) -> int:
        return await ctx.call_activity(inc, input=x)

    @wfr.workflow
    async def chain3(ctx: WorkflowContext, x: int) -> int:
        for _ in range(3):
            x = await ctx.call_activity(inc, input=x)
        return x

    @wfr.workflow
    async def saga(ctx: WorkflowContext, x: int) -> int:
        quotes = await when_all([ctx.call_activity(inc, input=x + i) for i in range(3)])
        return await ctx.call_activity(inc, input=min(quotes))

    @wfr.workflow
    async def gate(ctx: WorkflowContext, x: str) -> str:
        await ctx.wait_for_external_event("go")
        return x

    return wfr


async def start_all(client: WorkflowClient, workflow: str, ids: list[str]) -> None:
    """Start one instance of ``workflow`` per id (input: the id's position), 200 at a time."""
    for first in range(0, len(ids), 200):
        await asyncio.gather(*[
            client.schedule_new_workflow(workflow, input=first + i, instance_id=iid)
            for i, iid in enumerate(ids[first:first + 200])
        ])


async def consumer_count(broker: JetStreamBroker, prefix: str) -> int:
    """How many consumers the server has on the instances bucket's stream."""
    info = await broker.api(f"STREAM.INFO.KV_{prefix}_instances", None)
    return int(info["state"]["consumer_count"])


async def consumer_names(broker: JetStreamBroker, prefix: str) -> list[str]:
    """The names of the consumers on the instances bucket's stream."""
    listed = await broker.api(f"CONSUMER.LIST.KV_{prefix}_instances", {})
    return [c["name"] for c in listed["consumers"]]


@contextlib.asynccontextmanager
async def most_consumers(broker: JetStreamBroker, prefix: str) -> AsyncIterator[list[int]]:
    """Sample the consumer count of the instances bucket while the block runs; the samples."""
    samples: list[int] = []

    async def sample() -> None:
        while True:
            samples.append(await consumer_count(broker, prefix))
            await asyncio.sleep(0.05)  # a sampling interval, not a synchronisation

    sampler = asyncio.create_task(sample())
    try:
        yield samples
    finally:
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)


async def subscribed(client: WorkflowClient, instance_id: str, count: int = 1) -> None:
    """Return once ``count`` waits on ``instance_id`` have read its record and wait for
    changes (the client's watch holds their subscriptions)."""
    async with asyncio.timeout(20):
        while True:
            subscriptions = client._watch._subscribers.get(instance_id, set())
            if sum(s.current is not None for s in subscriptions) >= count:
                return
            await asyncio.sleep(0.01)


class TestManyWaits:
    @pytest.mark.timeout(300)
    async def test_2000_concurrent_waits_on_one_client_all_return_with_one_consumer(
        self, nats_url: str, prefix: str, client: WorkflowClient, broker: JetStreamBroker
    ) -> None:
        """2,000 waits for completion on one client, begun before any worker runs, all return
        COMPLETED with their output, and the server never holds more than one consumer on the
        instances bucket for them: the client's shared watch."""
        ids = [f"many-{i}" for i in range(2000)]
        await start_all(client, "one_step", ids)
        async with most_consumers(broker, prefix) as samples:
            waits = [
                asyncio.ensure_future(client.wait_for_workflow_completion(iid, timeout=240))
                for iid in ids
            ]
            async with quick_runtime(nats_url, prefix):
                states = await asyncio.gather(*waits)
            during = await consumer_names(broker, prefix)
        assert [WorkflowStatus.COMPLETED] * 2000 == [s.runtime_status for s in states]
        assert [str(i + 1) for i in range(2000)] == [s.serialized_output for s in states]
        assert [client._watch.consumer] == during
        assert 1 == max(samples)



class TestWaitProtocol:
    async def test_a_wait_begun_after_completion_returns_the_final_state(
        self, nats_url: str, prefix: str, client: WorkflowClient
    ) -> None:
        """Waits begun after the instance finished, with no worker running any more, return
        its final state: on the client that saw it finish and on a new client."""
        async with quick_runtime(nats_url, prefix):
            iid = await client.schedule_new_workflow("one_step", input=41)
            await client.wait_for_workflow_completion(iid, timeout=30)
        async with await WorkflowClient.connect(nats_url, prefix=prefix) as fresh:
            late = await asyncio.gather(
                client.wait_for_workflow_completion(iid, timeout=30),
                client.wait_for_workflow_start(iid, timeout=30, fetch_payloads=True),
                fresh.wait_for_workflow_completion(iid, timeout=30),
            )
        assert [(WorkflowStatus.COMPLETED, "42")] * 3 == [
            (s.runtime_status, s.serialized_output) for s in late
        ]

    async def test_many_waits_on_one_instance_all_return(
        self, nats_url: str, prefix: str, client: WorkflowClient
    ) -> None:
        """Fifty waits on one instance, begun while it waits for an event, all return once it
        completes."""
        async with quick_runtime(nats_url, prefix):
            iid = await client.schedule_new_workflow("gate", input="open")
            await client.wait_for_workflow_start(iid, timeout=30)
            waits = [
                asyncio.ensure_future(client.wait_for_workflow_completion(iid, timeout=30))
                for _ in range(50)
            ]
            await subscribed(client, iid, 50)
            await client.raise_workflow_event(iid, "go")
            states = await asyncio.gather(*waits)
        assert [(WorkflowStatus.COMPLETED, '"open"')] * 50 == [
            (s.runtime_status, s.serialized_output) for s in states
        ]

    async def test_a_wait_for_an_unknown_id_returns_once_it_is_started(
        self, nats_url: str, prefix: str, client: WorkflowClient
    ) -> None:
        """A wait on an id that has no instance yet keeps waiting, and returns when an
        instance of that id completes."""
        waiting = asyncio.ensure_future(client.wait_for_workflow_completion("later", timeout=30))
        await subscribed_absent(client, "later")
        async with quick_runtime(nats_url, prefix):
            await client.schedule_new_workflow("one_step", input=1, instance_id="later")
            state = await waiting
        assert (WorkflowStatus.COMPLETED, "2") == (state.runtime_status, state.serialized_output)

    async def test_a_timeout_raises_and_leaves_no_subscription(
        self, prefix: str, client: WorkflowClient
    ) -> None:
        """A wait that times out raises TimeoutError saying which instance and how long, and
        its subscription is gone from the client's watch."""
        await client.schedule_new_workflow("one_step", input=1, instance_id="stuck")
        with pytest.raises(TimeoutError) as raised:
            await client.wait_for_workflow_completion("stuck", timeout=0.5)
        assert "instance 'stuck' did not reach the awaited status within 0.5s" == str(raised.value)
        assert {} == client._watch._subscribers

    async def test_a_purge_while_waiting_raises_instance_not_found(
        self, nats_url: str, prefix: str, client: WorkflowClient, broker: JetStreamBroker
    ) -> None:
        """An instance purged while a wait for its start is pending ends that wait with
        InstanceNotFoundError (it can never start)."""
        await client.schedule_new_workflow("one_step", input=1, instance_id="doomed")
        waiting = asyncio.ensure_future(client.wait_for_workflow_start("doomed", timeout=30))
        await subscribed(client, "doomed")
        await broker.purge_instance("doomed")
        with pytest.raises(InstanceNotFoundError, match="'doomed' was purged while waiting"):
            await waiting

    async def test_a_closed_client_ends_its_waits(self, nats_url: str, prefix: str) -> None:
        """Closing a client ends its pending waits with an error instead of leaving them
        hanging until their timeout."""
        from brokers import WatchClosedError

        closing = await WorkflowClient.connect(nats_url, prefix=prefix)
        await closing.schedule_new_workflow("one_step", input=1, instance_id="orphan")
        waiting = asyncio.ensure_future(closing.wait_for_workflow_completion("orphan"))
        await subscribed(closing, "orphan")
        await closing.close()
        with pytest.raises(WatchClosedError):
            await waiting


async def subscribed_absent(client: WorkflowClient, instance_id: str) -> None:
    """Return once a wait on ``instance_id``, which has no record, has read that it has none."""
    async with asyncio.timeout(20):
        while not any(
            s._revision is not None for s in client._watch._subscribers.get(instance_id, ())
        ):
            await asyncio.sleep(0.01)


class TestWatchReplacement:
    async def test_a_change_made_while_the_consumer_is_gone_is_delivered(
        self, nats_url: str, prefix: str, client: WorkflowClient, broker: JetStreamBroker
    ) -> None:
        """When the watch's consumer is deleted on the server, a new one takes over from the
        change after the last one handled: the completion written meanwhile ends the wait."""
        async with quick_runtime(nats_url, prefix):
            iid = await client.schedule_new_workflow("gate", input="x")
            await client.wait_for_workflow_start(iid, timeout=30)
            waiting = asyncio.ensure_future(client.wait_for_workflow_completion(iid, timeout=30))
            await subscribed(client, iid)
            lost = client._watch.consumer
            await broker.api(f"CONSUMER.DELETE.KV_{prefix}_instances.{lost}", None)
            await client.raise_workflow_event(iid, "go")
            state = await waiting
            await client.wait_for_workflow_start(iid, timeout=30)  # the watch is running again
        assert WorkflowStatus.COMPLETED == state.runtime_status
        assert lost not in await consumer_names(broker, prefix)
        assert 1 <= client._watch.replacements

    async def test_a_change_made_while_the_connection_is_down_is_delivered(
        self, nats_url: str, prefix: str, client: WorkflowClient
    ) -> None:
        """When the client's connection drops (the server keeps the consumer) and the instance
        completes before it is back, the wait still returns: after a reconnect the consumer
        is replaced from the change after the last one handled."""
        async with (
            quick_runtime(nats_url, prefix),
            await WorkflowClient.connect(nats_url, prefix=prefix) as other,
        ):
            iid = await client.schedule_new_workflow("gate", input="x")
            await client.wait_for_workflow_start(iid, timeout=30)
            waiting = asyncio.ensure_future(client.wait_for_workflow_completion(iid, timeout=30))
            await subscribed(client, iid)
            client._broker.nc._transport.close()  # drop the TCP connection; it reconnects
            await other.raise_workflow_event(iid, "go")
            await other.wait_for_workflow_completion(iid, timeout=30)
            state = await waiting
        assert WorkflowStatus.COMPLETED == state.runtime_status
        assert 1 <= client._watch.replacements

    @pytest.mark.timeout(120)
    async def test_waits_return_across_a_server_restart(self, tmp_path, prefix: str) -> None:
        """A wait begun before the server restarts (same store and port) returns when its
        instance completes after the restart; so does a wait begun after it."""
        server = EmbeddedNatsServer(store_dir=tmp_path / "store", port=free_port()).start()
        try:
            client = await WorkflowClient.connect(server.url, prefix=prefix)
            try:
                async with quick_runtime(server.url, prefix):
                    before, after = "across-1", "across-2"
                    for iid in (before, after):
                        await client.schedule_new_workflow("gate", input=iid, instance_id=iid)
                        await client.wait_for_workflow_start(iid, timeout=30)
                    waiting = asyncio.ensure_future(
                        client.wait_for_workflow_completion(before, timeout=60)
                    )
                    await subscribed(client, before)
                    server.stop()
                    server.start()
                    await client.raise_workflow_event(before, "go")
                    state = await waiting
                    await client.raise_workflow_event(after, "go")
                    later = await client.wait_for_workflow_completion(after, timeout=60)
            finally:
                await client.close()
        finally:
            server.cleanup()
        assert [(WorkflowStatus.COMPLETED, f'"{before}"'), (WorkflowStatus.COMPLETED, f'"{after}"')
                ] == [(s.runtime_status, s.serialized_output) for s in (state, later)]
        assert 1 <= client._watch.replacements


class TestClusterFailover:
    @pytest.mark.slow
    @pytest.mark.timeout(180)
    @pytest.mark.parametrize("victim", ["watch-consumer-node", "client-node"])
    async def test_waits_return_when_a_node_is_killed(
        self, tmp_path, prefix: str, victim: str
    ) -> None:
        """On a 3-node cluster with R3 streams, waits begun before a node is SIGKILLed (the
        one holding the client's watch consumer, or the one the client is connected to) all
        return once their instances complete after the kill."""
        with NatsCluster(tmp_path / "cluster") as cluster:
            async with quick_runtime(cluster.urls, prefix, replicas=3):
                client = await WorkflowClient.connect(cluster.urls, prefix=prefix)
                other = await WorkflowClient.connect(cluster.urls, prefix=prefix)
                try:
                    ids = [f"node-{i}" for i in range(20)]
                    for iid in ids:
                        await client.schedule_new_workflow("gate", input=iid, instance_id=iid)
                        await client.wait_for_workflow_start(iid, timeout=30)
                    waits = [
                        asyncio.ensure_future(client.wait_for_workflow_completion(iid, timeout=90))
                        for iid in ids
                    ]
                    for iid in ids:
                        await subscribed(client, iid)
                    if victim == "client-node":
                        url = client._broker.nc.connected_url
                        assert url is not None
                        node = next(n for n in cluster.nodes if n.port == url.port)
                    else:
                        info = await client._broker.api(
                            f"CONSUMER.INFO.KV_{prefix}_instances.{client._watch.consumer}", None
                        )
                        node = cluster.node(info["cluster"]["leader"])
                    node.kill()
                    for iid in ids:
                        await other.raise_workflow_event(iid, "go")
                    states = await asyncio.gather(*waits)
                finally:
                    await other.close()
                    await client.close()
        assert [(WorkflowStatus.COMPLETED, f'"{iid}"') for iid in ids] == [
            (s.runtime_status, s.serialized_output) for s in states
        ]
        assert 1 <= client._watch.replacements


class TestLostWaitScenario:
    @pytest.mark.timeout(300)
    async def test_waits_after_warm_up_and_bursts_on_one_client_all_return(
        self, nats_url: str, prefix: str, client: WorkflowClient
    ) -> None:
        """The scenario where waits were lost, at the size it was reported (a wait per call
        lost some of the last burst's here too): on one long-lived client, 20 chain3 runs one
        at a time, 20 single sagas, then 500 sagas at once and 500 chain3 at once; every wait
        returns COMPLETED."""

        async def run(workflow: str, ids: list[str]) -> list[WorkflowStatus]:
            await start_all(client, workflow, ids)
            states = await asyncio.gather(
                *[client.wait_for_workflow_completion(iid, timeout=60) for iid in ids]
            )
            return [s.runtime_status for s in states]

        async with quick_runtime(nats_url, prefix):
            warm = [await run("chain3", [f"warm-{i}"]) for i in range(20)]
            single = [await run("saga", [f"single-{i}"]) for i in range(20)]
            sagas = await run("saga", [f"saga-{i}" for i in range(500)])
            chains = await run("chain3", [f"chain-{i}" for i in range(500)])
        assert [[WorkflowStatus.COMPLETED]] * 40 == warm + single
        assert [WorkflowStatus.COMPLETED] * 1000 == sagas + chains
