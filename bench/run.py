"""The jetloom benchmark: ``python -m bench.run [--quick | --full]``.

Each run measures, on the same nats-server and in the same run, the raw JetStream yardstick
(acknowledged publishes one at a time and pipelined, and a publish->fetch->ack round trip) and
the engine's scenarios, with workers in separate processes (one orchestrator, one activity
worker), and reports the engine's figures also as ratios to the yardstick. Output: a table on
the terminal and ``bench/results/latest.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import nats

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from brokers._server import EmbeddedNatsServer  # noqa: E402
from engine import WorkflowClient  # noqa: E402
from engine._state import decode_record  # noqa: E402

TERMINAL = {"COMPLETED", "FAILED", "TERMINATED"}


@dataclass
class Result:
    """One scenario's figures."""

    scenario: str
    instances: int
    seconds: float
    throughput: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    cpu_s_per_workflow: float
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss_mb(pid: int) -> float:
    return _status_mb(pid, "VmHWM:")


def _rss_mb(pid: int) -> float:
    return _status_mb(pid, "VmRSS:")


def _status_mb(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) / 1024
    return 0.0


# ----------------------------------------------------------------------------- yardstick


async def yardstick(url: str) -> dict[str, float]:
    """Raw JetStream figures on the same server: the ruler our figures are divided by."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    config = {"name": "YARDSTICK", "subjects": ["yard.>"], "storage": "file",
              "allow_atomic": True}
    await nc.request("$JS.API.STREAM.CREATE.YARDSTICK", json.dumps(config).encode(), timeout=10)
    n = 2000
    start = time.perf_counter()
    for _ in range(n):
        await js.publish("yard.one", b"x")
    one_at_a_time = n / (time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(0, 10 * n, 1000):
        await asyncio.gather(*[js.publish("yard.many", b"x") for _ in range(1000)])
    pipelined = 10 * n / (time.perf_counter() - start)
    sub = await js.pull_subscribe("yard.rt", durable="rt", stream="YARDSTICK")
    trips = []
    for _ in range(300):
        t = time.perf_counter()
        await js.publish("yard.rt", b"x")
        msgs = await sub.fetch(1, timeout=5)
        await msgs[0].ack_sync()
        trips.append(time.perf_counter() - t)
    # An atomic batch of two messages (what a start costs), one batch at a time.
    batches = []
    for i in range(200):
        t = time.perf_counter()
        batch_id = uuid.uuid4().hex
        await nc.publish(f"yard.batch.{i}", b"x",
                         headers={"Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": "1"})
        await nc.request(f"yard.batch.{i}", b"x", timeout=5, headers={
            "Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": "2", "Nats-Batch-Commit": "1",
        })
        batches.append(time.perf_counter() - t)
    await js.delete_stream("YARDSTICK")
    await nc.close()
    return {
        "publish_per_s": round(one_at_a_time),
        "pipelined_publish_per_s": round(pipelined),
        "round_trip_ms": round(statistics.median(trips) * 1000, 3),
        "atomic_batch_ms": round(statistics.median(batches) * 1000, 3),
    }


# ------------------------------------------------------------------------------- workers


class Workers:
    """One orchestrator and one activity worker process on a fresh prefix."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url, self.prefix = url, prefix
        self.procs: dict[str, subprocess.Popen[str]] = {}

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        for role in ("orchestrator", "activities"):
            proc = subprocess.Popen(
                [sys.executable, str(ROOT / "bench" / "worker.py"), self.url, self.prefix, role],
                stdout=subprocess.PIPE, text=True, env=env,
            )
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError(f"{role} worker did not start: {line!r}")
            self.procs[role] = proc

    def cpu(self) -> float:
        return sum(_cpu_seconds(p.pid) for p in self.procs.values())

    def peak_rss(self) -> dict[str, float]:
        return {role: round(_peak_rss_mb(p.pid), 1) for role, p in self.procs.items()}

    def rss(self) -> dict[str, float]:
        return {role: round(_rss_mb(p.pid), 1) for role, p in self.procs.items()}

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


async def _wait_all(
    client: WorkflowClient, ids: set[str], timeout: float,
    on_progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Watch the instances bucket until every id is terminal; return their records.

    ``on_progress(n)`` is called with the number finished so far after each one.
    """
    kv = await client._broker.instances()
    done: dict[str, Any] = {}
    watcher = await kv.watchall()
    deadline = time.monotonic() + timeout
    try:
        while len(done) < len(ids):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{len(ids) - len(done)} of {len(ids)} did not finish")
            try:
                entry = await watcher.updates(timeout=min(remaining, 5))
            except TimeoutError:
                continue
            if entry is None or not entry.value or entry.key not in ids:
                continue
            record = decode_record(entry.value)
            if record.status in TERMINAL and entry.key not in done:
                done[entry.key] = record
                if on_progress is not None:
                    on_progress(len(done))
    finally:
        await watcher.stop()
    return done


async def run_batch(url: str, scenario: str, workflow: str, inputs: list[Any],
                    timeout: float = 600) -> Result:
    """Start len(inputs) instances at once and measure until all finish."""
    prefix = "b" + uuid.uuid4().hex[:8]
    workers = Workers(url, prefix)
    client = await WorkflowClient.connect(url, prefix=prefix)
    workers.start()
    try:
        cpu0 = workers.cpu()
        ids = [f"{workflow}-{i}" for i in range(len(inputs))]
        # Memory growth: the workers' RSS once a fifth of the instances finished vs. the end.
        rss_marks: list[dict[str, float]] = []

        def mark_rss(finished: int) -> None:
            if finished == max(1, len(ids) // 5):
                rss_marks.append(workers.rss())

        waiter = asyncio.create_task(_wait_all(client, set(ids), timeout, mark_rss))
        start = time.perf_counter()
        for lo in range(0, len(ids), 200):
            await asyncio.gather(*[
                client.schedule_new_workflow(workflow, input=inputs[i], instance_id=ids[i])
                for i in range(lo, min(lo + 200, len(ids)))
            ])
        records = await waiter
        seconds = time.perf_counter() - start
        cpu = workers.cpu() - cpu0
        rss = workers.peak_rss()
        rss_marks.append(workers.rss())
    finally:
        workers.stop()
        await client.close()
    latencies = [
        (r.last_updated_at - r.created_at).total_seconds() * 1000 for r in records.values()
    ]
    failed = sum(r.status != "COMPLETED" for r in records.values())
    result = Result(
        scenario=scenario,
        instances=len(ids),
        seconds=round(seconds, 3),
        throughput=round(len(ids) / seconds, 1),
        p50_ms=round(_percentile(latencies, 0.50), 2),
        p95_ms=round(_percentile(latencies, 0.95), 2),
        p99_ms=round(_percentile(latencies, 0.99), 2),
        cpu_s_per_workflow=round(cpu / len(ids), 5),
        peak_rss_mb=rss,
    )
    if failed:
        result.extra["failed"] = failed
    if len(ids) >= 1000 and len(rss_marks) == 2:
        growth = {r: round(rss_marks[1][r] - rss_marks[0][r], 1) for r in rss_marks[1]}
        result.extra["rss_growth_mb"] = "/".join(str(v) for v in growth.values())
    if workflow == "long_history":
        marks = msgspec.json.decode(bytes(next(iter(records.values())).output))
        steps = [b - a for a, b in itertools.pairwise(marks)]
        # Medians of 20 steps around step 10 and of the last 20 steps.
        early = statistics.median(steps[1:21]) * 1000
        late = statistics.median(steps[-20:]) * 1000
        # Median step of each tenth of the run, to see a trend rather than two points.
        tenth = max(1, len(steps) // 10)
        profile = [
            round(statistics.median(steps[i:i + tenth]) * 1000, 2)
            for i in range(0, tenth * 10, tenth)
        ]
        result.extra.update(
            step_ms_at_10=round(early, 2), step_ms_at_end=round(late, 2),
            end_over_start=round(late / early, 2),
            step_ms_by_tenth=",".join(str(ms) for ms in profile),
        )
    return result


async def single_latency(url: str, runs: int) -> Result:
    """One saga at a time: the latency a lone request sees."""
    prefix = "b" + uuid.uuid4().hex[:8]
    workers = Workers(url, prefix)
    client = await WorkflowClient.connect(url, prefix=prefix)
    workers.start()
    try:
        cpu0 = workers.cpu()
        latencies = []
        start = time.perf_counter()
        for i in range(runs):
            t = time.perf_counter()
            iid = await client.schedule_new_workflow("order_saga", input=i)
            await client.wait_for_workflow_completion(iid, timeout=60)
            latencies.append((time.perf_counter() - t) * 1000)
        seconds = time.perf_counter() - start
        cpu = workers.cpu() - cpu0
        rss = workers.peak_rss()
    finally:
        workers.stop()
        await client.close()
    latencies = latencies[3:]  # warm-up
    return Result(
        scenario="order_saga single", instances=runs, seconds=round(seconds, 3),
        throughput=round(runs / seconds, 1),
        p50_ms=round(_percentile(latencies, 0.5), 2), p95_ms=round(_percentile(latencies, 0.95), 2),
        p99_ms=round(_percentile(latencies, 0.99), 2), cpu_s_per_workflow=round(cpu / runs, 5),
        peak_rss_mb=rss,
    )


def _table(results: list[Result], yard: dict[str, float]) -> str:
    header = (f"{'scenario':<26}{'n':>6}{'wf/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
              f"{'cpu ms/wf':>11}{'rss MB (orch/act)':>20}{'p50/rt':>8}  extra")
    lines = [header, "-" * len(header)]
    for r in results:
        rss = "/".join(str(v) for v in r.peak_rss_mb.values())
        ratio = r.p50_ms / yard["round_trip_ms"]
        extra = " ".join(f"{k}={v}" for k, v in r.extra.items())
        lines.append(
            f"{r.scenario:<26}{r.instances:>6}{r.throughput:>9}{r.p50_ms:>9}{r.p95_ms:>9}"
            f"{r.p99_ms:>9}{r.cpu_s_per_workflow * 1000:>11.2f}{rss:>20}{ratio:>8.1f}  {extra}"
        )
    lines.append("")
    lines.append(
        f"yardstick: {yard['publish_per_s']} acked publishes/s one at a time, "
        f"{yard['pipelined_publish_per_s']}/s pipelined, round trip {yard['round_trip_ms']} ms, "
        f"atomic batch of 2 {yard['atomic_batch_ms']} ms"
    )
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--full", action="store_true", help="include N=5000")
    parser.add_argument("--only", default="",
                        help="run only the scenarios whose name contains this text")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "latest.json"))
    parser.add_argument(
        "--store", type=Path, default=None,
        help="store directory of the embedded nats-server (default: a temporary directory); "
        "e.g. one on tmpfs to see what the disk costs",
    )
    args = parser.parse_args()
    url = os.environ.get("NATS_URL")
    server = None if url else EmbeddedNatsServer(store_dir=args.store).start()
    url = url or server.url  # type: ignore[union-attr]
    try:
        yard = await yardstick(url)
        print(f"yardstick: {yard}", flush=True)
        scale = 10 if args.quick else 1
        plan: list[tuple[str, str, list[Any]]] = [
            ("order_saga N=100", "order_saga", list(range(100 // scale))),
            ("order_saga N=1000", "order_saga", list(range(1000 // scale))),
            ("chain3 N=100", "chain3", list(range(100 // scale))),
            ("fanout100 x10", "fanout", [100] * (10 // min(scale, 10) or 1)),
            ("long_history 2000", "long_history", [2000 // scale]),
        ]
        if args.full:
            plan.insert(2, ("order_saga N=5000", "order_saga", list(range(5000))))
        plan = [step for step in plan if args.only in step[0]]
        results = []
        if args.only in "order_saga single":
            results.append(await single_latency(url, 13 if args.quick else 53))
            print(_table(results, yard), flush=True)
        for scenario, workflow, inputs in plan:
            results.append(await run_batch(url, scenario, workflow, inputs))
            print(f"  done: {scenario}", flush=True)
        print()
        print(_table(results, yard))
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"yardstick": yard,
                                   "results": [asdict(r) for r in results]}, indent=2))
        print(f"\nwritten: {out}")
    finally:
        if server is not None:
            server.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
