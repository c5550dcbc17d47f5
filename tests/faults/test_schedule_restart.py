"""A recurring schedule is kept by nats-server: it fires on across a restart of the server
(same port, same store), into worker processes that reconnect, once per tick."""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import UTC, datetime, timedelta

import pytest
from fault_worker import expected_saga_output
from faultkit import assert_completed_once

from brokers._server import EmbeddedNatsServer, free_port
from engine import WorkflowClient
from engine.core.schedules import TICK_FORMAT

SECOND = timedelta(seconds=1)


def tick(instance_id: str) -> datetime:
    return datetime.strptime(instance_id.rsplit("-", 1)[1], TICK_FORMAT).replace(tzinfo=UTC)


async def started_by(client: WorkflowClient, schedule_id: str) -> list[str]:
    return sorted(
        [s.instance_id async for s in client.list_workflows()
         if s.instance_id.startswith(f"{schedule_id}-")]
    )


async def until_started(client: WorkflowClient, schedule_id: str, after: datetime, n: int
                        ) -> None:
    """Wait until ``n`` instances with ticks after ``after`` exist."""
    deadline = time.monotonic() + 60
    while len([i for i in await started_by(client, schedule_id) if tick(i) > after]) < n:
        assert time.monotonic() < deadline, "the schedule stopped firing"
        await asyncio.sleep(0.3)


def steps(ticks: list[datetime]) -> set[timedelta]:
    return {b - a for a, b in itertools.pairwise(ticks)}


class TestScheduleAcrossRestart:
    @pytest.mark.slow
    @pytest.mark.timeout(180)
    async def test_a_schedule_fires_once_per_tick_before_and_after_a_restart(
        self, tmp_path, workers
    ):
        """Two workers, an every-second schedule; the server restarts on its store: ticks
        before and after the restart each start one instance, which completes once (its
        activities' effects applied once each)."""
        prefix = "sched"
        record = tmp_path / "effects.log"
        server = EmbeddedNatsServer(store_dir=tmp_path / "store", port=free_port()).start()
        try:
            for name in ("w1", "w2"):
                await workers.spawn(
                    server.url, prefix, name, "--workflows", "--activities", "--record",
                    str(record),
                )
            client = await WorkflowClient.connect(server.url, prefix=prefix)
            try:
                created = datetime.now(UTC)
                await client.create_schedule(
                    "tick", "saga", every=SECOND, input={"base": 1, "fan": 1}, overlap="allow"
                )
                await until_started(client, "tick", created, 3)
                server.stop()
                stopped = datetime.now(UTC)
                await asyncio.sleep(2)
                server.start()
                await until_started(client, "tick", stopped, 3)
                await client.delete_schedule("tick")
                await asyncio.sleep(1.5)  # a firing made before the delete is dropped
                ids = await started_by(client, "tick")
                await assert_completed_once(
                    client, {i: expected_saga_output(1, fan=1) for i in ids}, faults=1,
                    record=record, timeout=60,
                )
            finally:
                await client.close()
            assert [True, True] == [w.alive for w in workers.started]
            await workers.stop_all()
        finally:
            server.cleanup()
        before = [tick(i) for i in ids if tick(i) < stopped]
        after = [tick(i) for i in ids if tick(i) > stopped]
        assert {SECOND} == steps(before)  # one instance per tick, none missing
        assert {SECOND} == steps(after[1:])  # (the first firing after the restart may
        assert 3 <= len(after)  # catch up on the ticks missed while the server was down)
