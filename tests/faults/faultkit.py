"""Helpers of the fault tests: worker subprocesses, the effect log and history invariants."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import nats

from engine import WorkflowClient, WorkflowState, WorkflowStatus
from engine.core.events import (
    ChildWorkflowScheduled,
    ExecutionCompleted,
    ExecutionStarted,
    HistoryEvent,
    TaskCompleted,
    TaskFailed,
    TaskScheduled,
    TimerCreated,
    TimerFired,
    WorkflowTaskStarted,
)
from tests.processes import ROOT, LineProcess, child_env, start_worker_script

FAULT_WORKER = ROOT / "tests" / "faults" / "fault_worker.py"


class WorkerProcess(LineProcess):
    """One ``fault_worker.py`` subprocess; its stdout lines can be awaited, its log read."""

    line_timeout = 20

    def __init__(self, name: str, proc: asyncio.subprocess.Process, log_path: Path) -> None:
        super().__init__(name, proc)
        self.log_path = log_path

    @property
    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc.returncode is None

    def log(self) -> str:
        """Everything the worker logged so far (stderr)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def count_log(self, event: str) -> int:
        """How many log lines carry ``event='<event>'``."""
        return self.log().count(f"event='{event}'")

    def exit_detail(self) -> str:
        return f"; log tail:\n{self.log()[-3000:]}"

    async def wait_exit(self, timeout: float = 30) -> int:
        """Wait until the process exits by itself (a crash point); its return code."""
        await asyncio.wait_for(self.proc.wait(), timeout)
        await self._reader
        assert self.proc.returncode is not None
        return self.proc.returncode


class WorkerPool:
    """Starts fault workers for one test and stops them (by PID) at its end."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[WorkerProcess] = []

    async def spawn(
        self,
        nats_url: str,
        prefix: str,
        name: str,
        *options: str,
        crash_at: str | None = None,
        wait_ready: bool = True,
    ) -> WorkerProcess:
        """Start ``fault_worker.py`` and (by default) wait for its ``ready`` line."""
        env = child_env()
        env.pop("JETLOOM_CRASH_AT", None)
        if crash_at:
            env["JETLOOM_CRASH_AT"] = crash_at
        log_path = self.log_dir / f"{name}-{len(self.started)}.log"
        proc = await start_worker_script(
            FAULT_WORKER, nats_url, prefix, name, *options, log_path=log_path, env=env
        )
        worker = WorkerProcess(name, proc, log_path)
        self.started.append(worker)
        if wait_ready:
            await worker.wait_for_line(lambda line: line == "ready", timeout=30)
        return worker

    async def dump_all(self) -> None:
        """Ask every running worker to log its connection state and task stacks (SIGUSR1),
        waiting for each to say ``dumped``: what a failed test leaves for diagnosis."""
        for worker in self.started:
            if worker.alive:
                worker.proc.send_signal(signal.SIGUSR1)
                with contextlib.suppress(Exception):
                    await worker.wait_for_line(lambda line: line == "dumped", timeout=5)

    async def stop_all(self) -> None:
        """Stop every worker this pool started."""
        for worker in self.started:
            await worker.stop()


# ------------------------------------------------------------------ the effect log


def effects(path: Path) -> list[tuple[str, str, str]]:
    """The (worker, instance id, task_execution_id) lines the count activity appended."""
    if not path.exists():
        return []
    return [tuple(line.split(" ", 2)) for line in path.read_text().splitlines()]  # type: ignore[misc]


def effect_counts(path: Path) -> Counter[tuple[str, str]]:
    """How often each (instance id, task_execution_id) effect was applied."""
    return Counter((iid, key) for _, iid, key in effects(path))


# ------------------------------------------------------------------ history invariants


def history_problems(events: list[HistoryEvent]) -> list[str]:
    """What is wrong with one run's history: gaps, duplicates, events out of order.

    A sound run starts with one ``execution_started``; has task/timer ids 1..n without holes
    (they share one counter); at most one result per task and one firing per timer, each after
    its scheduling; non-decreasing workflow task times; and, once completed, nothing after
    ``execution_completed`` and no task left open.
    """
    problems: list[str] = []
    if not events or not isinstance(events[0], ExecutionStarted):
        return ["the run does not begin with execution_started"]
    if sum(isinstance(e, ExecutionStarted) for e in events) != 1:
        problems.append("more than one execution_started in the run")
    ids: list[int] = []
    scheduled: set[int] = set()
    results: Counter[int] = Counter()
    timers: set[int] = set()
    fired: Counter[int] = Counter()
    task_times = []
    for position, event in enumerate(events):
        if isinstance(event, TaskScheduled | ChildWorkflowScheduled):
            ids.append(event.task_id)
            scheduled.add(event.task_id)
        elif isinstance(event, TimerCreated):
            ids.append(event.timer_id)
            timers.add(event.timer_id)
        elif isinstance(event, TaskCompleted | TaskFailed):
            if event.task_id not in scheduled:
                problems.append(f"result for unscheduled task {event.task_id} at {position}")
            results[event.task_id] += 1
        elif isinstance(event, TimerFired):
            if event.timer_id not in timers:
                problems.append(f"firing of unknown timer {event.timer_id} at {position}")
            fired[event.timer_id] += 1
        elif isinstance(event, WorkflowTaskStarted):
            task_times.append(event.timestamp)
        elif isinstance(event, ExecutionCompleted) and position != len(events) - 1:
            problems.append(f"events after execution_completed (at {position})")
    if len(ids) != len(set(ids)):
        problems.append(f"duplicate task/timer ids: {sorted(ids)}")
    if sorted(ids) != list(range(1, len(ids) + 1)):
        problems.append(f"task/timer ids have a gap: {sorted(ids)}")
    problems += [f"task {t} has {n} results" for t, n in results.items() if n > 1]
    problems += [f"timer {t} fired {n} times" for t, n in fired.items() if n > 1]
    if task_times != sorted(task_times):
        problems.append("workflow_task_started times go backwards")
    if isinstance(events[-1], ExecutionCompleted):
        open_tasks = {t for t in scheduled if t not in results}
        if events[-1].status == "COMPLETED" and open_tasks:
            problems.append(f"completed with tasks never answered: {sorted(open_tasks)}")
    return problems


async def histories_problems(
    client: WorkflowClient, instance_ids: Iterable[str]
) -> dict[str, list[str]]:
    """``history_problems`` of every instance that has any (instance id -> problems)."""
    found: dict[str, list[str]] = {}
    for iid in instance_ids:
        problems = history_problems(await client.get_history(iid))
        if problems:
            found[iid] = problems
    return found


async def wait_all_completed(
    client: WorkflowClient, instance_ids: list[str], timeout: float, parallel: int = 50
) -> list[WorkflowState]:
    """Wait (watching, ``parallel`` at a time) until every instance is terminal.

    ``wait_for_workflow_completion`` reports a NATS request timeout of its watch (e.g. while
    the server restarts) as if its own deadline had passed (see the fault-test report), so a
    TimeoutError that comes before the deadline is retried here.
    """
    gate = asyncio.Semaphore(parallel)
    deadline = asyncio.get_running_loop().time() + timeout

    async def one(iid: str) -> WorkflowState:
        async with gate:
            while True:
                left = deadline - asyncio.get_running_loop().time()
                try:
                    return await client.wait_for_workflow_completion(iid, timeout=max(left, 0.1))
                except TimeoutError:
                    if deadline - asyncio.get_running_loop().time() <= 0.5:
                        raise

    async with asyncio.timeout(timeout + 5):
        return list(await asyncio.gather(*(one(i) for i in instance_ids)))


# ------------------------------------------------------------------ the tally


@dataclass
class FaultTally:
    """What the fault tests did and found, summed over the session (printed at its end)."""

    workflows: int = 0
    faults: int = 0
    lost: int = 0
    duplicated: int = 0
    reruns: int = 0
    bad_inputs: int = 0
    dead_lettered: int = 0

    def summary(self) -> str:
        """One line for the terminal summary."""
        return (
            f"fault tally: {self.workflows} workflows run, {self.faults} faults injected, "
            f"losses: {self.lost}, duplicates: {self.duplicated} "
            f"(designed activity re-runs, after a worker died or an ack went unconfirmed, "
            f"deduplicated by task_execution_id: {self.reruns}); "
            f"random bad inputs: {self.bad_inputs}, "
            f"dead-lettered: {self.dead_lettered}"
        )


TALLY = FaultTally()


async def assert_completed_once(
    client: WorkflowClient,
    expected: dict[str, object],
    *,
    faults: int,
    record: Path | None = None,
    reruns: int = 0,
    timeout: float = 45,
) -> list[WorkflowState]:
    """Every instance completes once with its expected output; count it in ``TALLY``.

    ``expected`` maps instance ids to their decoded outputs; ``faults`` is how many faults the
    test injected. A lost workflow is one that does not complete with its output in
    ``timeout``; a duplicate is a history with a doubled event or gap, or, with the effect
    ``record``, an activity effect applied more often than once, beyond the ``reruns`` the test
    caused by killing an activity worker mid-task (those run again by design and share one
    ``task_execution_id``, the idempotency key).
    """
    TALLY.workflows += len(expected)
    TALLY.faults += faults
    try:
        states = await wait_all_completed(client, list(expected), timeout=timeout)
    except TimeoutError:
        done = [await client.get_workflow_state(iid) for iid in expected]
        TALLY.lost += sum(
            s is None or s.runtime_status is not WorkflowStatus.COMPLETED for s in done
        )
        raise
    outputs = {
        s.instance_id: json.loads(s.serialized_output or "null")
        for s in states
        if s.runtime_status is WorkflowStatus.COMPLETED
    }
    TALLY.lost += sum(outputs.get(iid, ...) != value for iid, value in expected.items())
    problems = await histories_problems(client, expected)
    repeated = 0
    if record is not None:
        counts = effect_counts(record)
        repeated = sum(n - 1 for n in counts.values())
    TALLY.duplicated += len(problems) + max(0, repeated - reruns)
    TALLY.reruns += min(repeated, reruns)
    assert {i: WorkflowStatus.COMPLETED for i in expected} == {
        s.instance_id: s.runtime_status for s in states
    }
    assert expected == outputs
    assert {} == problems
    assert repeated <= reruns, f"activity effects applied {repeated} extra times"
    return states


# ------------------------------------------------------------------ JetStream probes


async def set_workflow_lease(nats_url: str, prefix: str, seconds: float, **options: object) -> None:
    """Shorten the ``workflows`` consumer's ack_wait (its lease) from the runtime's fixed 30 s.

    The runtime offers no option for it (see the fault-test report), and every runtime start
    sets it back, so call this after the last worker became ready.
    """
    stream = f"{prefix.upper()}_WORK"
    nc = await nats.connect(nats_url.split(","), **options)  # type: ignore[arg-type]
    try:
        info = json.loads(
            (await nc.request(f"$JS.API.CONSUMER.INFO.{stream}.workflows", b"", timeout=5)).data
        )
        config = {**info["config"], "ack_wait": int(seconds * 1_000_000_000)}
        reply = json.loads(
            (
                await nc.request(
                    f"$JS.API.CONSUMER.CREATE.{stream}.workflows",
                    json.dumps({"stream_name": stream, "config": config}).encode(),
                    timeout=5,
                )
            ).data
        )
        assert "error" not in reply, reply
    finally:
        await nc.close()


async def stream_messages(nc: nats.NATS, stream: str, subject: str | None = None) -> int:
    """How many messages ``stream`` holds (on ``subject`` when given)."""
    js = nc.jetstream()
    info = await js.stream_info(stream, subjects_filter=subject)
    if subject is None:
        return int(info.state.messages)
    return sum((info.state.subjects or {}).values())


async def wait_consumer_drained(
    nats_url: str, prefix: str, consumer: str, timeout: float = 30, **options: object
) -> None:
    """Wait until a work-stream consumer has nothing pending nor unacknowledged.

    This is how a test knows that a redelivery it expects (after a lease ran out) has happened,
    even when the workflow no longer needs it. Checks every 0.2 s, up to ``timeout``.
    """
    stream = f"{prefix.upper()}_WORK"
    nc = await nats.connect(nats_url.split(","), **options)  # type: ignore[arg-type]
    try:
        js = nc.jetstream()
        async with asyncio.timeout(timeout):
            while True:
                info = await js.consumer_info(stream, consumer)
                if info.num_pending == 0 and info.num_ack_pending == 0:
                    return
                await asyncio.sleep(0.2)
    finally:
        await nc.close()
