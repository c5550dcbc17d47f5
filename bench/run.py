"""The jetloom benchmark: ``python -m bench.run [--quick | --full] [--mode default|tuned|both]``.

Each run measures, on the same nats-server and in the same run, the raw JetStream yardstick
(acknowledged publishes one at a time and pipelined, a publish->fetch->ack round trip and an
atomic batch of two) and the engine's scenarios as a user sees them: every instance is timed
from just before the client's ``schedule_new_workflow`` call to the return of its
``wait_for_workflow_completion``, on one ``WorkflowClient`` in this process, with one
orchestrator and one activity worker process. Each scenario runs twice, with workers set up as
a user gets them (``default``) and with the tuned settings (``tuned``); see ``bench/worker.py``.
Output: a table on the terminal and ``bench/results/latest.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import nats

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from brokers._server import EmbeddedNatsServer  # noqa: E402
from engine import WorkflowClient, WorkflowState, WorkflowStatus  # noqa: E402

MODES = ("default", "tuned")
MODE_TITLES = {
    "default": "WorkflowRuntime(url) as given, INFO logs (observability.configure), asyncio.run",
    "tuned": "1,000 workflow tasks and activities at once, WARNING logs, uvloop",
}


@dataclass
class Result:
    """One scenario's figures with workers in one mode."""

    scenario: str
    mode: str
    instances: int
    seconds: float
    """From the first start to the last completion seen by the client."""
    throughput: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    """Percentiles of end-to-end latency (start call to the wait's return)."""
    cpu_s_per_workflow: float
    """The two workers' user+system CPU per instance."""
    client_cpu_s_per_workflow: float
    """This process's CPU (the client) per instance."""
    server_cpu_s_per_workflow: float | None
    """The embedded nats-server's CPU per instance (None with NATS_URL)."""
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Scenario:
    """A headline scenario: a workflow and the inputs of its instances."""

    name: str
    workflow: str
    inputs: list[Any]
    one_at_a_time: bool = False
    """Start each instance once the previous one has finished; else start all at once."""
    warm_up: int = 0
    """Leading instances left out of the latency percentiles."""
    timeout: float = 600.0
    """Seconds each instance's wait may take."""


@dataclass(frozen=True)
class Timing:
    """One instance seen from the client."""

    started: float
    """``perf_counter()`` just before ``schedule_new_workflow``."""
    finished: float
    """``perf_counter()`` when ``wait_for_workflow_completion`` returned."""
    state: WorkflowState

    @property
    def latency_ms(self) -> float:
        """End-to-end latency."""
        return (self.finished - self.started) * 1000

    @property
    def server_ms(self) -> float:
        """The record's ``last_updated_at - created_at`` (the previous method's figure)."""
        return (self.state.last_updated_at - self.state.created_at).total_seconds() * 1000


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


def _worker_env() -> dict[str, str]:
    """This process's environment without what would change a worker's defaults (the log
    level, OpenTelemetry export), with the repository on PYTHONPATH."""
    env = {
        key: value for key, value in os.environ.items()
        if key != "JETLOOM_LOG_LEVEL" and not key.startswith("OTEL_")
    }
    env["PYTHONPATH"] = str(ROOT)
    return env


class Workers:
    """One orchestrator and one activity worker process on a fresh prefix.

    Each worker's stderr (its logs) goes to a file in ``log_dir``, as a service's logs go to a
    file or a collector; its stdout only says ``ready``.
    """

    def __init__(self, url: str, prefix: str, mode: str, log_dir: Path) -> None:
        self.url, self.prefix, self.mode, self.log_dir = url, prefix, mode, log_dir
        self.procs: dict[str, subprocess.Popen[str]] = {}

    def start(self) -> None:
        env = _worker_env()
        for role in ("orchestrator", "activities"):
            log_path = self.log_dir / f"{self.prefix}-{self.mode}-{role}.log"
            with log_path.open("w") as log:
                proc = subprocess.Popen(
                    [sys.executable, str(ROOT / "bench" / "worker.py"),
                     self.url, self.prefix, role, self.mode],
                    stdout=subprocess.PIPE, stderr=log, text=True, env=env,
                )
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if line.strip() != "ready":
                proc.kill()
                proc.wait()
                tail = log_path.read_text()[-2000:]
                raise RuntimeError(
                    f"{role} worker ({self.mode}) did not start: {line!r}; its log ends:\n{tail}"
                )
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


# ----------------------------------------------------------------------------- scenarios


async def _end_to_end(
    client: WorkflowClient, workflow: str, value: Any, timeout: float,
    on_finished: Callable[[], None],
) -> Timing:
    """Start one instance and wait for it, as a user would; time both calls together."""
    started = time.perf_counter()
    instance_id = await client.schedule_new_workflow(workflow, input=value)
    state = await client.wait_for_workflow_completion(instance_id, timeout=timeout)
    finished = time.perf_counter()
    on_finished()
    return Timing(started, finished, state)


async def measure(
    url: str, scenario: Scenario, mode: str, log_dir: Path, server_pid: int | None,
) -> Result:
    """Run ``scenario`` against fresh workers in ``mode``, timing every instance end to end.

    Instances start one after another or all at once (one coroutine each, gathered on one
    client), as the scenario says.
    """
    prefix = "b" + uuid.uuid4().hex[:8]
    workers = Workers(url, prefix, mode, log_dir)
    client = await WorkflowClient.connect(url, prefix=prefix)
    n = len(scenario.inputs)
    # Memory growth: the workers' RSS once a fifth of the instances finished vs. the end.
    rss_marks: list[dict[str, float]] = []
    finished = 0

    def count_finished() -> None:
        nonlocal finished
        finished += 1
        if finished == max(1, n // 5):
            rss_marks.append(workers.rss())

    try:
        workers.start()
        cpu0, client0 = workers.cpu(), time.process_time()
        server0 = _cpu_seconds(server_pid) if server_pid is not None else 0.0
        if scenario.one_at_a_time:
            timings = [
                await _end_to_end(client, scenario.workflow, value, scenario.timeout,
                                  count_finished)
                for value in scenario.inputs
            ]
        else:
            timings = await asyncio.gather(*[
                _end_to_end(client, scenario.workflow, value, scenario.timeout, count_finished)
                for value in scenario.inputs
            ])
        cpu = workers.cpu() - cpu0
        client_cpu = time.process_time() - client0
        server_cpu = _cpu_seconds(server_pid) - server0 if server_pid is not None else None
        rss = workers.peak_rss()
        rss_marks.append(workers.rss())
    finally:
        workers.stop()
        await client.close()
    seconds = max(t.finished for t in timings) - min(t.started for t in timings)
    measured = timings[scenario.warm_up:]
    latencies = [t.latency_ms for t in measured]
    result = Result(
        scenario=scenario.name,
        mode=mode,
        instances=n,
        seconds=round(seconds, 3),
        throughput=round(n / seconds, 1),
        p50_ms=round(_percentile(latencies, 0.50), 2),
        p95_ms=round(_percentile(latencies, 0.95), 2),
        p99_ms=round(_percentile(latencies, 0.99), 2),
        cpu_s_per_workflow=round(cpu / n, 5),
        client_cpu_s_per_workflow=round(client_cpu / n, 5),
        server_cpu_s_per_workflow=None if server_cpu is None else round(server_cpu / n, 5),
        peak_rss_mb=rss,
    )
    result.extra["server_p50_ms"] = round(
        _percentile([t.server_ms for t in measured], 0.50), 2
    )
    # Above ~0.9 the client, not the engine, sets the pace.
    result.extra["client_busy"] = round(client_cpu / seconds, 2)
    failed = sum(t.state.runtime_status != WorkflowStatus.COMPLETED for t in timings)
    if failed:
        result.extra["failed"] = failed
    if n >= 1000 and len(rss_marks) == 2:
        growth = {r: round(rss_marks[1][r] - rss_marks[0][r], 1) for r in rss_marks[1]}
        result.extra["rss_growth_mb"] = "/".join(str(v) for v in growth.values())
    if scenario.workflow == "long_history" and not failed:
        result.extra.update(_step_profile(timings[0].state))
    return result


def _step_profile(state: WorkflowState) -> dict[str, Any]:
    """Step times of a long_history run, from the workflow-clock marks it returns."""
    marks: list[float] = json.loads(state.serialized_output or "[]")
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
    return {
        "step_ms_at_10": round(early, 2),
        "step_ms_at_end": round(late, 2),
        "end_over_start": round(late / early, 2),
        "step_ms_by_tenth": ",".join(str(ms) for ms in profile),
    }


def plan(quick: bool, full: bool) -> list[Scenario]:
    """The headline scenarios, smaller with ``quick``, with N=5000 added by ``full``."""
    scale = 10 if quick else 1
    scenarios = [
        Scenario("order_saga single", "order_saga", list(range(13 if quick else 53)),
                 one_at_a_time=True, warm_up=3, timeout=60),
        Scenario("order_saga N=100", "order_saga", list(range(100 // scale))),
        Scenario("order_saga N=1000", "order_saga", list(range(1000 // scale))),
        Scenario("chain3 N=100", "chain3", list(range(100 // scale))),
        Scenario("fanout100 x10", "fanout", [100] * (10 // scale)),
        Scenario("long_history 2000", "long_history", [2000 // scale]),
    ]
    if full:
        scenarios.insert(3, Scenario("order_saga N=5000", "order_saga", list(range(5000))))
    return scenarios


# --------------------------------------------------------------------------------- report


_GROUP = f"{'wf/s':>9}{'p50 ms':>10}{'p99 ms':>10}{'cpu ms/wf':>11}{'p50/rt':>8}"


def _group(result: Result | None, yard: dict[str, float]) -> str:
    if result is None:
        return f"{'-':>9}{'-':>10}{'-':>10}{'-':>11}{'-':>8}"
    ratio = result.p50_ms / yard["round_trip_ms"]
    return (f"{result.throughput:>9}{result.p50_ms:>10}{result.p99_ms:>10}"
            f"{result.cpu_s_per_workflow * 1000:>11.2f}{ratio:>8.1f}")


def _details(result: Result) -> str:
    server = ("" if result.server_cpu_s_per_workflow is None
              else f"  nats-server cpu {result.server_cpu_s_per_workflow * 1000:.2f} ms/wf")
    rss = "/".join(str(v) for v in result.peak_rss_mb.values())
    extra = " ".join(f"{k}={v}" for k, v in result.extra.items())
    return (f"  {result.scenario:<20}{result.mode:<9}p95 {result.p95_ms} ms  "
            f"client cpu {result.client_cpu_s_per_workflow * 1000:.2f} ms/wf{server}  "
            f"rss MB (orch/act) {rss}  {extra}")


def table(results: list[Result], yard: dict[str, float]) -> str:
    """Default and tuned figures side by side, then each result's details and the yardstick."""
    by_key = {(r.scenario, r.mode): r for r in results}
    names = list(dict.fromkeys(r.scenario for r in results))
    left = f"{'':<22}{'':>6}"
    header = f"{'scenario':<22}{'n':>6}{_GROUP} |{_GROUP}"
    titles = f"{left}{'default workers':^{len(_GROUP)}} |{'tuned workers':^{len(_GROUP)}}"
    lines = [titles.rstrip(), header, "-" * len(header)]
    for name in names:
        n = next(r.instances for r in results if r.scenario == name)
        lines.append(
            f"{name:<22}{n:>6}{_group(by_key.get((name, 'default')), yard)} |"
            f"{_group(by_key.get((name, 'tuned')), yard)}"
        )
    lines.append("")
    modes = dict.fromkeys(r.mode for r in results)
    lines.extend(f"{mode}: {MODE_TITLES[mode]}" for mode in modes)
    lines.append("")
    lines.extend(_details(r) for r in results)
    lines.append("")
    lines.append(
        f"yardstick: {yard['publish_per_s']} acked publishes/s one at a time, "
        f"{yard['pipelined_publish_per_s']}/s pipelined, round trip {yard['round_trip_ms']} ms, "
        f"atomic batch of 2 {yard['atomic_batch_ms']} ms"
    )
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--full", action="store_true", help="include N=5000")
    parser.add_argument("--only", default="",
                        help="run only the scenarios whose name contains this text")
    parser.add_argument("--mode", choices=[*MODES, "both"], default="both",
                        help="workers as a user gets them (default), tuned, or both (default)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "latest.json"))
    parser.add_argument(
        "--store", type=Path, default=None,
        help="store directory of the embedded nats-server (default: a temporary directory); "
        "e.g. one on tmpfs to see what the disk costs",
    )
    args = parser.parse_args()
    modes = MODES if args.mode == "both" else (args.mode,)
    scenarios = [s for s in plan(args.quick, args.full) if args.only in s.name]
    url = os.environ.get("NATS_URL")
    server = None if url else EmbeddedNatsServer(store_dir=args.store).start()
    url = url or server.url  # type: ignore[union-attr]
    server_pid = server.process.pid if server is not None and server.process else None
    log_dir = Path(tempfile.mkdtemp(prefix="jetloom-bench-logs-"))
    try:
        yard = await yardstick(url)
        print(f"yardstick: {yard}", flush=True)
        results: list[Result] = []
        for scenario in scenarios:
            for mode in modes:
                result = await measure(url, scenario, mode, log_dir, server_pid)
                results.append(result)
                print(f"  done: {scenario.name} [{mode}] {result.throughput} wf/s, "
                      f"p50 {result.p50_ms} ms, p99 {result.p99_ms} ms", flush=True)
        print()
        print(table(results, yard))
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({
            "method": "end to end: schedule_new_workflow -> wait_for_workflow_completion "
                      "on one client in the bench process",
            "modes": {mode: MODE_TITLES[mode] for mode in modes},
            "yardstick": yard,
            "results": [asdict(r) for r in results],
        }, indent=2))
        print(f"\nwritten: {out}")
    except BaseException:
        print(f"worker logs kept in {log_dir}", file=sys.stderr)
        raise
    else:
        shutil.rmtree(log_dir, ignore_errors=True)
    finally:
        if server is not None:
            server.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
