"""The NATS side fails: a server restart under load, and the loss of nodes of a cluster (one
node, a node that rejoins, two nodes at once)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats.errors
import pytest
from fault_worker import expected_saga_output
from faultkit import WorkerPool, assert_completed_once, effect_counts, wait_all_completed
from nats.aio.client import Client as NATS

from brokers._errors import UnavailableError
from brokers._server import EmbeddedNatsServer, NatsCluster, free_port
from engine import WorkflowClient, WorkflowRuntime, WorkflowStatus

INFLIGHT = 200


async def _start(
    client: WorkflowClient, n: int, timer_s: float, *, group: str = "s"
) -> dict[str, int]:
    """Start ``n`` sagas with a timer (ids ``<group>-<i>``); instance id -> expected output."""
    expected = {}
    for i in range(n):
        iid = await client.schedule_new_workflow(
            "saga", input={"base": i, "fan": 2, "timer_s": timer_s}, instance_id=f"{group}-{i}"
        )
        expected[iid] = expected_saga_output(i)
    return expected


@contextlib.asynccontextmanager
async def _cluster_run(
    tmp_path: Path, workers: WorkerPool, prefix: str
) -> AsyncIterator[tuple[NatsCluster, WorkflowClient, Path]]:
    """A 3-node cluster, two workers hosting workflows and activities at R3, and a client:
    (cluster, client, the activity effects log). A failure inside first has the workers write
    their connection state and stacks into their logs; on a clean exit both workers must
    still be alive."""
    record = tmp_path / "effects.log"
    with NatsCluster(tmp_path / "cluster") as cluster:
        common = ("--workflows", "--activities", "--record", str(record), "--replicas", "3")
        await workers.spawn(cluster.urls, prefix, "w1", *common)
        await workers.spawn(cluster.urls, prefix, "w2", *common)
        client = await WorkflowClient.connect(cluster.urls, prefix=prefix)
        try:
            yield cluster, client, record
        except BaseException:
            await workers.dump_all()  # connection state and stacks into their logs
            raise
        finally:
            await client.close()
        assert [True, True] == [w.alive for w in workers.started]
        await workers.stop_all()


async def _wait_some_running(client: WorkflowClient, at_least: int, timeout: float) -> None:
    """Wait until ``at_least`` instances have left PENDING (their first task ran)."""
    async with asyncio.timeout(timeout):
        while True:
            started = [
                s async for s in client.list_workflows()
                if s.runtime_status is not WorkflowStatus.PENDING
            ]
            if len(started) >= at_least:
                return
            await asyncio.sleep(0.1)


async def _assert_complete_once(
    client, expected: dict[str, int], record, timeout: float, *, faults: int = 1
) -> None:
    """Every saga completes once with its output, each of its 3 activity effects applied once
    (no activity worker died, so none may run twice)."""
    await assert_completed_once(client, expected, faults=faults, record=record, timeout=timeout)
    assert 3 * len(expected) == len(effect_counts(record))


class TestServerRestart:
    """nats-server goes away and comes back on the same port and store."""

    @pytest.mark.slow
    @pytest.mark.timeout(150)
    async def test_200_sagas_in_flight_survive_a_restart(self, tmp_path, workers):
        """200 sagas with a 1 s timer in flight across a restart all complete exactly once:
        workers and client reconnect, timers set before the restart still fire."""
        prefix = "restart"
        record = tmp_path / "effects.log"
        server = EmbeddedNatsServer(store_dir=tmp_path / "store", port=free_port()).start()
        try:
            await workers.spawn(
                server.url, prefix, "w1", "--workflows", "--activities", "--record", str(record)
            )
            await workers.spawn(
                server.url, prefix, "w2", "--workflows", "--activities", "--record", str(record)
            )
            client = await WorkflowClient.connect(server.url, prefix=prefix)
            try:
                expected = await _start(client, INFLIGHT, timer_s=1.0)
                await _wait_some_running(client, INFLIGHT // 4, timeout=30)
                server.stop()
                server.start()
                await _assert_complete_once(client, expected, record, timeout=60)
            finally:
                await client.close()
            assert [True, True] == [w.alive for w in workers.started]
            await workers.stop_all()
        finally:
            server.cleanup()


async def _replicas(nc, streams: list[str], timeout: float = 45) -> dict[str, int]:
    """Each stream's configured replicas (stream name -> num_replicas).

    A stream whose leader is still being elected after a node loss does not answer STREAM.INFO
    at once: ask again (every 5 s at most) until ``timeout``.
    """
    found = {}
    async with asyncio.timeout(timeout):
        for stream in streams:
            while stream not in found:
                try:
                    reply = await nc.request(f"$JS.API.STREAM.INFO.{stream}", b"", timeout=5)
                except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
                    continue
                info = json.loads(reply.data)
                if "error" in info:  # e.g. 10008 while the meta group elects: ask again soon
                    await asyncio.sleep(0.2)
                else:
                    found[stream] = info["config"]["num_replicas"]
    return found


def _all_streams(prefix: str) -> list[str]:
    """The streams behind a prefix's topology: three streams, the KV and the Object Store."""
    big = prefix.upper()
    return [f"{big}_HISTORY", f"{big}_WORK", f"{big}_DEADLETTER", f"KV_{prefix}_instances",
            f"OBJ_{prefix}_payloads"]


def _victim(cluster: NatsCluster, prefix: str, role: str) -> EmbeddedNatsServer:
    """The node to kill: the meta leader, the history stream's leader or the leader of the
    workflows consumer."""
    if role == "meta-leader":
        return cluster.meta_leader()
    if role == "history-leader":
        return cluster.stream_leader(f"{prefix.upper()}_HISTORY")
    return cluster.consumer_leader(f"{prefix.upper()}_WORK", "workflows")


class TestClusterNodeLoss:
    """A 3-node cluster with streams at replicas=3 loses one node while workflows run."""

    @pytest.mark.slow
    @pytest.mark.timeout(150)
    @pytest.mark.parametrize("role", ["meta-leader", "history-leader", "workflows-leader"])
    async def test_workflows_complete_when_a_node_is_killed(self, tmp_path, workers, role):
        """With R3 streams and every URL given, SIGKILLing one node mid-run (the meta leader,
        the history stream's leader or the workflows consumer's leader) loses nothing: every
        saga completes once, and the streams stay at R3 although the client asks for none."""
        prefix = "cluster"
        async with _cluster_run(tmp_path, workers, prefix) as (cluster, client, record):
            expected = await _start(client, 40, timer_s=1.0)
            await _wait_some_running(client, 10, timeout=30)
            victim = await asyncio.to_thread(_victim, cluster, prefix, role)
            victim.kill()
            # Client calls while the cluster elects new leaders are answered, not failed.
            during = [await client.get_workflow_state(iid) for iid in list(expected)[:5]]
            history = await client.get_history(next(iter(expected)))
            for i in range(3):  # and starts made meanwhile run
                late = await client.schedule_new_workflow(
                    "saga", input={"base": 100 + i, "fan": 2, "timer_s": 1.0},
                    instance_id=f"late-{i}",
                )
                expected[late] = expected_saga_output(100 + i)
            await _assert_complete_once(client, expected, record, timeout=60)
            assert {s: 3 for s in _all_streams(prefix)} == await _replicas(
                client._broker.nc, _all_streams(prefix)
            )
            assert list(expected)[:5] == [state.instance_id for state in during]
            assert "ExecutionStarted" == type(history[0]).__name__


def _current_with(group: dict[str, Any] | None, member: str) -> bool:
    """True when a raft group (the ``cluster`` of a stream or consumer info) has a leader and
    three replicas, ``member`` among them, every follower current and online."""
    if not group or not group.get("leader"):
        return False
    followers = group.get("replicas") or []
    names = {group["leader"]} | {r.get("name") for r in followers}
    return (
        member in names
        and 3 == len(names)
        and all(r.get("current") and not r.get("offline") for r in followers)
    )


async def _replicas_current(nc: NATS, prefix: str, member: str) -> bool:
    """True when every stream of ``prefix`` and every durable consumer of its work stream report
    all replicas current, ``member`` included (STREAM.INFO and CONSUMER.LIST)."""
    try:
        groups = []
        for stream in _all_streams(prefix):
            reply = await nc.request(f"$JS.API.STREAM.INFO.{stream}", b"", timeout=5)
            groups.append(json.loads(reply.data).get("cluster"))
        reply = await nc.request(f"$JS.API.CONSUMER.LIST.{prefix.upper()}_WORK", b"", timeout=5)
    except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
        return False
    listing = json.loads(reply.data)
    durables = [c for c in listing.get("consumers") or [] if c["config"].get("durable_name")]
    if "error" in listing or len(durables) < 2:  # the workflows and activities consumers
        return False
    groups += [c.get("cluster") for c in durables]
    return all(_current_with(group, member) for group in groups)


async def _wait_replicas_current(nc: NATS, prefix: str, member: str, timeout: float) -> None:
    """Wait until the servers report ``member`` a current replica of every stream and durable
    consumer of ``prefix`` (asked every 0.2 s)."""
    async with asyncio.timeout(timeout):
        while not await _replicas_current(nc, prefix, member):
            await asyncio.sleep(0.2)


def _has_no_leader(node: EmbeddedNatsServer, prefix: str) -> bool:
    """True when ``node`` reports itself unhealthy and knows no leader of the meta group nor of
    any stream of ``prefix`` (what a node left alone in a cluster of three comes to)."""
    if node.is_healthy():
        return False
    jsz = node.monitor("jsz", accounts=True, streams=True)
    leaders = [(jsz.get("meta_cluster") or {}).get("leader")] + [
        (detail.get("cluster") or {}).get("leader")
        for account in jsz.get("account_details") or []
        for detail in account.get("stream_detail") or []
        if detail.get("name") in _all_streams(prefix)
    ]
    return 1 + len(_all_streams(prefix)) == len(leaders) and not any(leaders)


async def _wait_no_leader(node: EmbeddedNatsServer, prefix: str, timeout: float) -> None:
    """Wait until ``node`` reports the loss of quorum (``_has_no_leader``; asked every 0.2 s)."""
    async with asyncio.timeout(timeout):
        while not await asyncio.to_thread(_has_no_leader, node, prefix):
            await asyncio.sleep(0.2)


def _unconfirmed_activity_acks(workers: WorkerPool, prefix: str) -> int:
    """How many activity attempts may run again by design: those whose ack the workers gave
    up confirming (``ack.not_confirmed``), and those whose result had to be published again
    through the outage (``activity.result_publish_retry``, first retry), while the lease
    could not be extended either, so the task went to another worker once it ran out."""
    lines = [line for worker in workers.started for line in worker.log().splitlines()]
    unconfirmed = sum(
        "event='ack.not_confirmed'" in line and f"subject='{prefix}.outbox.activity." in line
        for line in lines
    )
    retried = sum(
        "event='activity.result_publish_retry'" in line and "attempt=0" in line
        for line in lines
    )
    return unconfirmed + retried


class TestClusterNodeRejoin:
    """A node of a 3-node R3 cluster is killed, comes back, and then has to carry the cluster."""

    @pytest.mark.slow
    @pytest.mark.timeout(240)
    async def test_a_rejoined_node_keeps_the_cluster_going_when_another_dies(
        self, tmp_path, workers
    ):
        """SIGKILL the history stream's leader mid-run, start more sagas while it is down,
        restart it on its store and ports and wait until the servers report it healthy and a
        current replica of every stream and consumer, then SIGKILL another node and start a
        third group: quorum now needs the rejoined node, and every saga of the three groups
        completes exactly once."""
        prefix = "rejoin"
        history = f"{prefix.upper()}_HISTORY"
        async with _cluster_run(tmp_path, workers, prefix) as (cluster, client, record):
            expected = await _start(client, 40, timer_s=1.0, group="a")
            await _wait_some_running(client, 10, timeout=30)
            rejoined = await asyncio.to_thread(cluster.stream_leader, history)
            rejoined.kill()
            expected |= await _start(client, 40, timer_s=1.0, group="b")
            rejoined.start()  # same store, ports and config file
            await asyncio.to_thread(rejoined.wait_until_healthy, 60)
            assert rejoined.server_name is not None
            await _wait_replicas_current(
                client._broker.nc, prefix, rejoined.server_name, timeout=60
            )
            leader = await asyncio.to_thread(cluster.stream_leader, history)
            second = (
                leader if leader is not rejoined
                else next(n for n in cluster.nodes if n is not rejoined)
            )
            second.kill()
            expected |= await _start(client, 40, timer_s=1.0, group="c")
            await _assert_complete_once(client, expected, record, timeout=90, faults=2)
            assert {s: 3 for s in _all_streams(prefix)} == await _replicas(
                client._broker.nc, _all_streams(prefix)
            )


class TestClusterQuorumLoss:
    """A 3-node R3 cluster loses two nodes at once, so no stream has a quorum, and gets them
    back."""

    @pytest.mark.slow
    @pytest.mark.timeout(240)
    async def test_no_saga_is_lost_while_quorum_is_gone(self, tmp_path, workers):
        """SIGKILL two of three nodes while 40 sagas run: the last node reports itself unhealthy
        and knows no leader; a start and a read sent then fail with UnavailableError (JetStream
        error 10008) instead of hanging, and the refused start leaves no instance behind; once
        both nodes are back on their stores and ports, workers and client reconnect by
        themselves and every saga started before the loss completes exactly once (an activity
        whose ack could not be confirmed during the loss may run once more, deduplicated)."""
        prefix = "quorum"
        async with _cluster_run(tmp_path, workers, prefix) as (cluster, client, record):
            expected = await _start(client, 40, timer_s=1.0)
            await _wait_some_running(client, 10, timeout=30)
            meta = await asyncio.to_thread(cluster.meta_leader)
            survivor = next(n for n in cluster.nodes if n is not meta)
            lost = [n for n in cluster.nodes if n is not survivor]
            for node in lost:
                node.kill()
            await _wait_no_leader(survivor, prefix, timeout=60)
            start = asyncio.create_task(client.schedule_new_workflow(
                "saga", input={"base": 0, "fan": 2}, instance_id="during-loss"
            ))
            read = asyncio.create_task(
                client.get_workflow_state(next(iter(expected)))
            )
            # Both are asked again for ~20 s, then fail: a guard, not a measured delay.
            finished, _ = await asyncio.wait({start, read}, timeout=90)
            assert {start, read} == finished, "a client call hangs while quorum is lost"
            assert [UnavailableError, UnavailableError] == [
                type(start.exception()), type(read.exception())
            ]
            assert "JetStream error 10008" in str(start.exception())
            for node in lost:
                node.start()  # same store, ports and config file
            for node in cluster.nodes:
                await asyncio.to_thread(node.wait_until_healthy, 60)
            await wait_all_completed(client, list(expected), timeout=90)
            # An activity whose ack no server could confirm before the runtime gave up is
            # delivered again once its lease runs out and runs once more, with the same
            # task_execution_id; its result is deduplicated in the history.
            reruns = _unconfirmed_activity_acks(workers, prefix)
            await assert_completed_once(
                client, expected, faults=2, record=record, reruns=reruns
            )
            assert 3 * len(expected) == len(effect_counts(record))
            assert None is await client.get_workflow_state("during-loss")  # nothing left


class TestClusterReplicas:
    """Runtimes and clients that ask for fewer replicas than the streams have."""

    @pytest.mark.slow
    @pytest.mark.timeout(90)
    async def test_default_replicas_never_shrink_r3_streams(self, tmp_path):
        """A client and a runtime left at replicas=1 keep existing R3 streams and buckets at
        R3; a runtime asking for 3 raises streams a replicas=1 client created first."""
        prefix = "replicas"
        with NatsCluster(tmp_path / "cluster") as cluster:
            first = await WorkflowClient.connect(cluster.urls, prefix=prefix)
            try:
                nc = first._broker.nc
                assert {s: 1 for s in _all_streams(prefix)} == await _replicas(
                    nc, _all_streams(prefix)
                )
                async with WorkflowRuntime(cluster.urls, prefix=prefix, replicas=3):
                    pass
                assert {s: 3 for s in _all_streams(prefix)} == await _replicas(
                    nc, _all_streams(prefix)
                )
                again = await WorkflowClient.connect(cluster.urls, prefix=prefix)
                await again.close()
                async with WorkflowRuntime(cluster.urls, prefix=prefix):
                    pass
                assert {s: 3 for s in _all_streams(prefix)} == await _replicas(
                    nc, _all_streams(prefix)
                )
            finally:
                await first.close()
