"""The ``jetloom`` command line, run as real subprocesses against a real nats-server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from brokers import JetStreamBroker
from brokers._server import EmbeddedNatsServer, free_port
from engine import WorkflowClient, WorkflowRuntime, WorkflowStatus
from engine.core.codec import to_json
from engine.core.events import (
    ExecutionCompleted,
    ExecutionStarted,
    TaskCommit,
    TaskCompleted,
    TaskScheduled,
    WorkflowTaskStarted,
    encode,
)
from engine.core.state import InstanceRecord, encode_record
from tests.cli_workflows import build_runtime

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS_FILE = "tests/cli_workflows.py"


@dataclass(frozen=True)
class CliResult:
    """What one ``jetloom`` invocation printed and returned."""

    code: int
    stdout: str
    stderr: str


Jetloom = Callable[..., Awaitable[CliResult]]
"""The ``jetloom`` fixture: run the CLI with these arguments on the test's server and prefix."""


def _cli_env() -> dict[str, str]:
    """The test's environment without NATS_URL/JETLOOM_PREFIX, this venv's bin first on PATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "JETLOOM_PREFIX")}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


async def _spawn(
    *args: str,
    env: dict[str, str] | None = None,
    stdin: int | None = None,
    cwd: Path = ROOT,
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "engine.cli",
        *args,
        cwd=cwd,
        env={**_cli_env(), **(env or {})},
        stdin=stdin,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def run_cli(
    *args: str,
    timeout: float = 60,
    env: dict[str, str] | None = None,
    stdin: bytes | None = None,
    cwd: Path = ROOT,
) -> CliResult:
    """Run ``python -m engine.cli ARGS`` without blocking the event loop the runtime uses."""
    proc = await _spawn(
        *args, env=env, stdin=None if stdin is None else asyncio.subprocess.PIPE, cwd=cwd
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    assert proc.returncode is not None
    return CliResult(proc.returncode, out.decode(), err.decode())


def _where(nats_url: str, prefix: str) -> list[str]:
    return ["--nats-url", nats_url, "--prefix", prefix]


@pytest.fixture
def jetloom(nats_url: str, prefix: str) -> Jetloom:
    """``await jetloom(*args)`` runs the CLI on the test's server and namespace."""

    async def invoke(*args: str) -> CliResult:
        return await run_cli(*args, "--nats-url", nats_url, "--prefix", prefix)

    return invoke


@pytest.fixture
async def runtime(nats_url: str, prefix: str) -> AsyncIterator[WorkflowRuntime]:
    """The example workflows of tests/cli_workflows.py, hosted in this process."""
    async with build_runtime(nats_url, prefix) as rt:
        yield rt


def assert_one_line_error(result: CliResult, *fragments: str) -> None:
    """Exit code 1 and a single ``error:`` line on stderr naming every fragment."""
    assert (1, 1) == (result.code, len(result.stderr.splitlines())), result.stderr
    assert result.stderr.startswith("error: ")
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in result.stderr


async def _start_approval(jetloom: Jetloom, client: WorkflowClient, instance_id: str) -> None:
    result = await jetloom("start", "approval", "--input", '"order-1"', "--id", instance_id)
    assert (0, instance_id) == (result.code, result.stdout.strip())
    await client.wait_for_workflow_start(instance_id, timeout=20)


@pytest.mark.usefixtures("runtime")
class TestStart:
    async def test_wait_prints_completed_and_output(self, jetloom: Jetloom) -> None:
        """start --wait prints the instance id, then status COMPLETED and the output."""
        result = await jetloom("start", "doubler", "--input", "21", "--id", "d1", "--wait")
        assert (0, ["d1", "status: COMPLETED", "output: 42"]) == (
            result.code,
            result.stdout.splitlines(),
        )

    async def test_generated_id_is_printed(self, jetloom: Jetloom, client: WorkflowClient) -> None:
        """Without --id the generated instance id is printed and names the new instance."""
        result = await jetloom("start", "doubler", "--input", "1")
        state = await client.wait_for_workflow_completion(result.stdout.strip(), timeout=20)
        assert ("doubler", "2") == (state.name, state.serialized_output)

    async def test_failed_workflow_exits_1_with_its_failure(self, jetloom: Jetloom) -> None:
        """start --wait on a failing workflow prints FAILED and the error, and exits 1."""
        result = await jetloom("start", "failing", "--wait")
        assert 1 == result.code
        assert ["status: FAILED", "failure: ValueError: boom"] == result.stdout.splitlines()[1:]

    async def test_wait_on_a_workflow_nobody_hosts_exits_1_with_the_reason(
        self, jetloom: Jetloom
    ) -> None:
        """start --wait of a workflow no worker hosts (a typo) stops as soon as the instance
        is STALLED, prints why, and exits 1."""
        result = await jetloom("start", "doublr", "--id", "typo", "--wait", "--timeout", "20")
        assert 1 == result.code, result.stderr
        assert "status: STALLED" in result.stdout.splitlines()
        assert "unknown workflow 'doublr'" in result.stdout
        assert "jetloom terminate typo" in result.stdout

    async def test_input_from_a_file_and_from_stdin(
        self, nats_url: str, prefix: str, tmp_path: Path, client: WorkflowClient
    ) -> None:
        """--input @file reads the JSON from a file (here 400 KB: it travels through the
        Object Store) and --input @- from standard input."""
        big = "x" * 400_000
        path = tmp_path / "order.json"
        path.write_text(json.dumps(big))
        where = _where(nats_url, prefix)
        from_file = await run_cli("start", "approval", "--input", f"@{path}", "--id", "f1", *where)
        from_stdin = await run_cli(
            "start", "doubler", "--input", "@-", "--id", "f2", "--wait", *where, stdin=b"21"
        )
        assert (0, "f1") == (from_file.code, from_file.stdout.strip()), from_file.stderr
        state = await client.get_workflow_state("f1")
        assert json.dumps(big) == state.serialized_input
        assert ["f2", "status: COMPLETED", "output: 42"] == from_stdin.stdout.splitlines()

    async def test_unreadable_or_bad_input_file_is_one_error_line(
        self, jetloom: Jetloom, tmp_path: Path
    ) -> None:
        """A missing file, or one that is not JSON, is one error line naming the file."""
        (tmp_path / "bad.json").write_text("{nope")
        missing = await jetloom("start", "doubler", "--input", f"@{tmp_path / 'none.json'}")
        bad = await jetloom("start", "doubler", "--input", f"@{tmp_path / 'bad.json'}")
        assert_one_line_error(missing, "--input", "none.json", "cannot read")
        assert_one_line_error(bad, "--input", "bad.json", "not valid JSON")

    async def test_running_id_is_refused(self, jetloom: Jetloom, client: WorkflowClient) -> None:
        """Starting an id whose instance still runs is one error line naming the id."""
        await _start_approval(jetloom, client, "busy")
        result = await jetloom("start", "approval", "--id", "busy")
        assert_one_line_error(result, "'busy'", "still running")


@pytest.mark.usefixtures("runtime")
class TestStatus:
    async def test_shows_status_input_and_output(self, jetloom: Jetloom) -> None:
        """status lists the instance's workflow, status, input and output."""
        await jetloom("start", "doubler", "--input", "5", "--id", "s1", "--wait")
        result = await jetloom("status", "s1")
        fields = dict(line.split(":", 1) for line in result.stdout.splitlines())
        assert {
            "instance": "s1",
            "workflow": "doubler",
            "status": "COMPLETED",
            "input": "5",
            "output": "10",
        } == {k: fields[k].strip() for k in ("instance", "workflow", "status", "input", "output")}

    async def test_json_has_decoded_payloads(self, jetloom: Jetloom) -> None:
        """status --json prints the state with input and output as JSON values."""
        await jetloom("start", "doubler", "--input", "3", "--id", "s2", "--wait")
        state = json.loads((await jetloom("status", "s2", "--json")).stdout)
        assert ("COMPLETED", 3, 6) == (state["runtime_status"], state["input"], state["output"])


@pytest.mark.usefixtures("runtime")
class TestHistory:
    async def test_table_shows_activity_rows(self, jetloom: Jetloom) -> None:
        """history prints a table whose rows include the activity's scheduling and result."""
        await jetloom("start", "doubler", "--input", "21", "--id", "h1", "--wait")
        result = await jetloom("history", "h1")
        lines = result.stdout.splitlines()
        assert ["#", "time", "delta", "task", "type", "details"] == lines[0].split()
        rows = {line.split()[5]: line.split(maxsplit=6) for line in lines[2:]}
        assert ["1", "name=double input=21"] == rows["task_scheduled"][4::2]
        assert "1" == rows["task_completed"][4]
        assert "result=42" in rows["task_completed"][6]
        assert "status=COMPLETED result=42" in rows["execution_completed"][6]

    async def test_a_reader_that_stops_early_ends_it_quietly(
        self, jetloom: Jetloom, nats_url: str, prefix: str
    ) -> None:
        """history piped into a reader that has gone (``| head -0``) exits 141, as Unix tools
        do, with nothing on stderr."""
        await jetloom("start", "doubler", "--input", "2", "--id", "h3", "--wait")

        def run_with_stdout_closed() -> tuple[int, bytes]:
            proc = subprocess.Popen(
                [sys.executable, "-m", "engine.cli", "history", "h3", *_where(nats_url, prefix)],
                cwd=ROOT, env=_cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )
            assert proc.stdout is not None and proc.stderr is not None
            proc.stdout.close()  # the reader goes before the command writes
            err = proc.stderr.read()
            return proc.wait(timeout=60), err

        assert (141, b"") == await asyncio.to_thread(run_with_stdout_closed)

    async def test_deltas_are_never_negative(
        self, jetloom: Jetloom, broker: JetStreamBroker
    ) -> None:
        """An activity result stamped by its worker just before the workflow task that
        records it (clocks of two processes) shows as +0ms, never as a negative delta."""
        t0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
        ms = timedelta(milliseconds=1)
        events = [
            ExecutionStarted(timestamp=t0, name="doubler", execution_id="e1", input=to_json(2)),
            WorkflowTaskStarted(timestamp=t0 + 10 * ms),
            TaskScheduled(timestamp=t0 + 10 * ms, task_id=1, name="double", input=to_json(2)),
            WorkflowTaskStarted(timestamp=t0 + 25 * ms),
            TaskCompleted(timestamp=t0 + 23 * ms, task_id=1, result=to_json(4)),
            ExecutionCompleted(timestamp=t0 + 25 * ms, status="COMPLETED", result=to_json(4)),
        ]
        seq = await broker.commit("skewed", 0, [encode(TaskCommit(events))])
        record = InstanceRecord(
            instance_id="skewed", name="doubler", status="COMPLETED", created_at=t0,
            last_updated_at=t0 + 25 * ms, execution_id="e1", history_seq=seq,
        )
        await broker.put_record("skewed", encode_record(record), seq, lambda _: 0)
        table = await jetloom("history", "skewed")
        as_json = json.loads((await jetloom("history", "skewed", "--json")).stdout)
        deltas = [line.split()[3] for line in table.stdout.splitlines()[2:]]
        assert ["-", "+10ms", "+0ms", "+15ms", "+0ms", "+0ms"] == deltas
        assert [None, 0.01, 0.0, 0.015, 0.0, 0.0] == [
            None if e["delta_s"] is None else round(e["delta_s"], 3) for e in as_json
        ]

    async def test_instance_not_run_yet_has_an_empty_history(
        self, jetloom: Jetloom, client: WorkflowClient
    ) -> None:
        """history of an instance that status shows but no worker ran says so, exit 0."""
        await client.schedule_new_workflow("nobody_hosts_this", instance_id="h4")
        await client._wait_until("h4", lambda s: s is WorkflowStatus.STALLED, 20, False)
        result = await jetloom("history", "h4")
        assert (0, "h4 has no history yet (STALLED); jetloom status h4 shows why") == (
            result.code, result.stdout.splitlines()[0]
        )

    async def test_json_lists_tagged_events(self, jetloom: Jetloom) -> None:
        """history --json prints the events with their type tags, oldest first."""
        await jetloom("start", "doubler", "--input", "1", "--id", "h2", "--wait")
        events = json.loads((await jetloom("history", "h2", "--json")).stdout)
        assert ("execution_started", "execution_completed") == (
            events[0]["type"],
            events[-1]["type"],
        )


@pytest.mark.usefixtures("runtime")
class TestSteering:
    async def test_raise_completes_a_waiting_workflow(
        self, jetloom: Jetloom, client: WorkflowClient
    ) -> None:
        """raise delivers the event (with its JSON data) to the waiting workflow."""
        await _start_approval(jetloom, client, "r1")
        result = await jetloom("raise", "r1", "approve", "--data", "true")
        state = await client.wait_for_workflow_completion("r1", timeout=20)
        assert (0, WorkflowStatus.COMPLETED, {"order": "order-1", "approved": True}) == (
            result.code,
            state.runtime_status,
            json.loads(state.serialized_output or "null"),
        )

    async def test_terminate_ends_a_running_instance(
        self, jetloom: Jetloom, client: WorkflowClient
    ) -> None:
        """terminate ends the instance as TERMINATED with the given output."""
        await _start_approval(jetloom, client, "t1")
        result = await jetloom("terminate", "t1", "--output", '"stopped"')
        state = await client.wait_for_workflow_completion("t1", timeout=20)
        assert (0, WorkflowStatus.TERMINATED, '"stopped"') == (
            result.code,
            state.runtime_status,
            state.serialized_output,
        )

    async def test_paused_instance_completes_after_resume(
        self, jetloom: Jetloom, client: WorkflowClient
    ) -> None:
        """pause then resume are accepted, and the event raised in between is not lost."""
        await _start_approval(jetloom, client, "p1")
        codes = [
            (await jetloom("pause", "p1")).code,
            (await jetloom("raise", "p1", "approve", "--data", "false")).code,
            (await jetloom("resume", "p1")).code,
        ]
        state = await client.wait_for_workflow_completion("p1", timeout=20)
        assert ([0, 0, 0], '{"order":"order-1","approved":false}') == (
            codes,
            state.serialized_output,
        )

    async def test_terminate_finished_instance_is_refused(self, jetloom: Jetloom) -> None:
        """Terminating an instance that already finished is one error line naming its status."""
        await jetloom("start", "doubler", "--input", "1", "--id", "done", "--wait")
        assert_one_line_error(await jetloom("terminate", "done"), "'done'", "COMPLETED")

    async def test_purged_instance_is_not_found(self, jetloom: Jetloom) -> None:
        """After purge, status reports the instance as unknown."""
        await jetloom("start", "doubler", "--input", "1", "--id", "gone", "--wait")
        purge = await jetloom("purge", "gone")
        assert (0, "purged gone (1 instance)") == (purge.code, purge.stdout.strip())
        assert_one_line_error(await jetloom("status", "gone"), "no instance 'gone'")


@pytest.mark.usefixtures("runtime")
class TestList:
    @pytest.fixture
    async def instances(
        self, runtime: WorkflowRuntime, jetloom: Jetloom, client: WorkflowClient
    ) -> None:
        """One completed doubler, one failed instance, one running approval (needs the runtime)."""
        await jetloom("start", "doubler", "--input", "1", "--id", "l-done", "--wait")
        await jetloom("start", "failing", "--id", "l-failed", "--wait")
        await _start_approval(jetloom, client, "l-running")

    @staticmethod
    def ids(result: CliResult) -> list[str]:
        return [line.split()[0] for line in result.stdout.splitlines()[2:]]

    @pytest.mark.usefixtures("instances")
    async def test_lists_every_instance_in_a_table(self, jetloom: Jetloom) -> None:
        """list without filters shows all instances, oldest first, under a header."""
        result = await jetloom("list")
        assert ["instance", "workflow", "status", "created", "updated"] == (
            result.stdout.splitlines()[0].split()
        )
        assert ["l-done", "l-failed", "l-running"] == self.ids(result)

    @pytest.mark.usefixtures("instances")
    async def test_status_filter(self, jetloom: Jetloom) -> None:
        """list --status (case-insensitive) shows only instances in that status."""
        assert ["l-running"] == self.ids(await jetloom("list", "--status", "running"))

    @pytest.mark.usefixtures("instances")
    async def test_workflow_filter_as_json(self, jetloom: Jetloom) -> None:
        """list --workflow --json shows only that workflow's instances as JSON."""
        states = json.loads((await jetloom("list", "--workflow", "failing", "--json")).stdout)
        assert [("l-failed", "FAILED")] == [(s["instance_id"], s["runtime_status"]) for s in states]

    async def test_empty_namespace(self, jetloom: Jetloom) -> None:
        """list in a namespace without instances says so."""
        assert "no instances" == (await jetloom("list")).stdout.strip()


class TestErrors:
    async def test_unknown_instance(self, jetloom: Jetloom) -> None:
        """Commands on an unknown id print one line pointing at 'jetloom list'."""
        for command in (["status", "nope"], ["history", "nope"], ["raise", "nope", "e"]):
            assert_one_line_error(await jetloom(*command), "no instance 'nope'", "jetloom list")

    async def test_invalid_instance_id(self, jetloom: Jetloom) -> None:
        """An id with forbidden characters is refused with the rule it breaks."""
        assert_one_line_error(await jetloom("status", "a b"), "invalid instance id")

    async def test_bad_input_json(self, jetloom: Jetloom) -> None:
        """Invalid JSON in --input names the option."""
        assert_one_line_error(
            await jetloom("start", "doubler", "--input", "{oops"), "--input is not valid JSON"
        )

    async def test_no_server(self) -> None:
        """A URL where no server listens fails fast with that URL and how to fix it."""
        url = f"nats://127.0.0.1:{free_port()}"
        result = await run_cli("list", "--nats-url", url, timeout=15)
        assert_one_line_error(result, f"cannot connect to NATS at {url}", "jetloom dev")

    async def test_usage_error_is_one_line(self) -> None:
        """A usage mistake is one line too (exit code 2, as argparse does)."""
        result = await run_cli("list", "--status", "sleepy")
        assert (2, 1) == (result.code, len(result.stderr.splitlines()))
        assert "unknown status 'sleepy'" in result.stderr


async def _wait_until_ready(proc: asyncio.subprocess.Process) -> list[str]:
    """Lines ``jetloom dev`` printed up to its ready line (the rest is drained in background)."""
    assert proc.stdout is not None
    lines: list[str] = []
    while not lines or not lines[-1].startswith("jetloom dev: ready"):
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line, f"jetloom dev exited early: {lines}"
        lines.append(line.decode().rstrip())
    return lines


async def _stop(proc: asyncio.subprocess.Process) -> tuple[int, str, str]:
    """SIGTERM the dev process by PID; its exit code and the output it printed afterwards."""
    proc.send_signal(signal.SIGTERM)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


GREETER = """
from engine import ActivityContext, WorkflowContext, WorkflowRuntime

wfr = WorkflowRuntime()


@wfr.activity
async def shout(ctx: ActivityContext, text: str) -> str:
    return text.upper()


@wfr.workflow
async def greet(ctx: WorkflowContext, name: str) -> str:
    loud = await ctx.call_activity(shout, input=name)
    return await ctx.call_activity("exclaim", input=loud)  # hosted by another module
"""

EXCLAIMER = """
from engine import ActivityContext, WorkflowContext, WorkflowRuntime

wfr = WorkflowRuntime()


@wfr.activity
async def exclaim(ctx: ActivityContext, text: str) -> str:
    return text + "!"


@wfr.workflow
async def farewell(ctx: WorkflowContext, name: str) -> str:
    return await ctx.call_activity("shout", input=f"bye {name}")  # hosted by another module
"""

NAPPER = """
from datetime import timedelta

from engine import WorkflowContext, WorkflowRuntime

wfr = WorkflowRuntime()


@wfr.workflow
async def napper(ctx: WorkflowContext, seconds: float) -> str:
    await ctx.create_timer(timedelta(seconds=seconds))
    return "rested"
"""


class TestDev:
    async def test_hosts_a_file_and_stops_gracefully(
        self, nats_url: str, prefix: str, jetloom: Jetloom
    ) -> None:
        """dev hosts the file's runtime on the given server, logs each workflow that
        completed or failed, and exits 0 on SIGTERM."""
        proc = await _spawn("dev", WORKFLOWS_FILE, "--nats-url", nats_url, "--prefix", prefix)
        try:
            lines = await _wait_until_ready(proc)
            result = await jetloom("start", "doubler", "--input", "4", "--wait")
            await jetloom("start", "failing", "--wait")
        finally:
            code, out, err = await _stop(proc)
        assert (0, ["status: COMPLETED", "output: 8"]) == (code, result.stdout.splitlines()[1:])
        assert f"jetloom dev: NATS at {nats_url}" == lines[0]
        assert "workflows: approval, doubler, failing; activities: double" in lines[1]
        assert "jetloom dev: stopped" in out
        assert '"event": "workflow.completed"' in err
        assert '"event": "workflow.failed"' in err

    async def test_modules_share_one_runtime(
        self, nats_url: str, prefix: str, jetloom: Jetloom, tmp_path: Path
    ) -> None:
        """dev of two modules hosts every workflow and activity of both in one runtime: each
        module's workflow calls an activity of the other, and no worker meets work it does
        not host."""
        (tmp_path / "greeter.py").write_text(GREETER)
        (tmp_path / "exclaimer.py").write_text(EXCLAIMER)
        proc = await _spawn(
            "dev", "greeter.py", "exclaimer.py", "--nats-url", nats_url, "--prefix", prefix,
            cwd=tmp_path,
        )
        try:
            lines = await _wait_until_ready(proc)
            greet = await jetloom("start", "greet", "--input", '"ada"', "--wait")
            farewell = await jetloom("start", "farewell", "--input", '"ada"', "--wait")
        finally:
            code, _, err = await _stop(proc)
        hosting = [line for line in lines if line.startswith("jetloom dev: hosting")]
        assert [
            "jetloom dev: hosting greeter.py:wfr and exclaimer.py:wfr in one runtime "
            f"(prefix '{prefix}'; workflows: farewell, greet; activities: exclaim, shout)"
        ] == hosting
        assert (0, '"ADA!"', '"BYE ADA"') == (
            code, greet.stdout.splitlines()[-1][8:], farewell.stdout.splitlines()[-1][8:]
        )
        for trouble in ("workflow.task_failed", "not_registered", "dead_lettered"):
            assert trouble not in err

    async def test_a_name_two_modules_register_is_refused(
        self, nats_url: str, prefix: str, tmp_path: Path
    ) -> None:
        """dev refuses, before starting anything, two modules registering one name."""
        (tmp_path / "greeter.py").write_text(GREETER)
        (tmp_path / "greeter2.py").write_text(GREETER)
        result = await run_cli(
            "dev", "greeter.py", "greeter2.py", "--nats-url", nats_url, "--prefix", prefix,
            cwd=tmp_path,
        )
        assert_one_line_error(
            result, "greeter.py:wfr", "greeter2.py:wfr", "workflow 'greet'", "activity 'shout'"
        )
        assert "" == result.stdout

    async def test_modules_that_set_a_setting_differently_are_refused(
        self, nats_url: str, prefix: str, tmp_path: Path
    ) -> None:
        """dev refuses, before starting anything, modules whose runtimes set differently a
        setting one runtime cannot serve both ways (here the application id)."""
        (tmp_path / "greeter.py").write_text(GREETER.replace("WorkflowRuntime()",
                                                             'WorkflowRuntime(app_id="shop")'))
        (tmp_path / "exclaimer.py").write_text(EXCLAIMER)
        result = await run_cli(
            "dev", "greeter.py", "exclaimer.py", "--nats-url", nats_url, "--prefix", prefix,
            cwd=tmp_path,
        )
        assert_one_line_error(
            result, "greeter.py:wfr and exclaimer.py:wfr", "app_id (greeter.py:wfr: 'shop', "
            "exclaimer.py:wfr: '')", "separate processes",
        )
        assert "" == result.stdout

    async def test_missing_file_is_reported_before_a_taken_port(
        self, nats_server: EmbeddedNatsServer
    ) -> None:
        """dev of a file that does not exist names the file, even when the port is taken."""
        result = await run_cli("dev", "missing.py", "--port", str(nats_server.port))
        assert_one_line_error(result, "no such file 'missing.py'")

    async def test_state_is_kept_in_the_project_folder_and_timers_resume(
        self, tmp_path: Path
    ) -> None:
        """By default dev keeps the embedded server's store in ./.jetloom and says so; after
        a restart an instance waiting on a timer resumes and completes."""
        (tmp_path / "napper.py").write_text(NAPPER)
        url = f"nats://127.0.0.1:{(port := free_port())}"
        command = ("dev", "napper.py", "--port", str(port), "--http-port", "0")
        proc = await _spawn(*command, cwd=tmp_path)
        try:
            first = await _wait_until_ready(proc)
            await run_cli("start", "napper", "--input", "3", "--id", "nap", "--nats-url", url)
            await run_cli("watch", "nap", "--once", "--nats-url", url)
        finally:
            await _stop(proc)
        proc = await _spawn(*command, cwd=tmp_path)
        try:
            second = await _wait_until_ready(proc)
            finished = await run_cli("watch", "nap", "--timeout", "30", "--nats-url", url)
        finally:
            await _stop(proc)
        store = tmp_path / ".jetloom"
        said = f"jetloom dev: NATS at {url} (embedded nats-server, state kept in {store}"
        assert [True, True] == [lines[0].startswith(said) for lines in (first, second)]
        assert (0, 'output: "rested"') == (finished.code, finished.stdout.splitlines()[-1])

    async def test_temporary_store_is_removed(self, tmp_path: Path) -> None:
        """dev --temporary runs on a throwaway store, says so, and leaves no .jetloom."""
        (tmp_path / "napper.py").write_text(NAPPER)
        proc = await _spawn(
            "dev", "napper.py", "--temporary", "--port", "0", "--http-port", "0", cwd=tmp_path
        )
        try:
            lines = await _wait_until_ready(proc)
        finally:
            await _stop(proc)
        assert "temporary store" in lines[0] and "removed on exit" in lines[0]
        assert not (tmp_path / ".jetloom").exists()

    async def test_embedded_server(self, tmp_path: Path, prefix: str) -> None:
        """Without a NATS URL, dev runs its own nats-server on --port with --store."""
        url = f"nats://127.0.0.1:{(port := free_port())}"
        store = tmp_path / "js"
        proc = await _spawn("dev", WORKFLOWS_FILE, "--port", str(port), "--store", str(store))
        try:
            lines = await _wait_until_ready(proc)
            result = await run_cli("start", "doubler", "--input", "7", "--wait", "--nats-url", url)
        finally:
            code, _, _ = await _stop(proc)
        assert (0, "output: 14") == (code, result.stdout.splitlines()[-1])
        assert (
            f"jetloom dev: NATS at {url} (embedded nats-server, state kept in {store}; "
            "--temporary for a throwaway store)"
        ) == lines[0]
        assert_one_line_error(await run_cli("list", "--nats-url", url), "cannot connect")

    async def test_module_without_runtime(self, tmp_path: Path) -> None:
        """dev on a module without a WorkflowRuntime fails with one line, starting no server."""
        empty = tmp_path / "empty_app.py"
        empty.write_text("VALUE = 1\n")
        result = await run_cli("dev", str(empty), "--port", "0")
        assert_one_line_error(result, "no WorkflowRuntime", str(empty))
        assert "" == result.stdout


@pytest.mark.usefixtures("runtime")
class TestListPaging:
    @pytest.fixture
    async def five(self, runtime: WorkflowRuntime, jetloom: Jetloom) -> None:
        """Five completed doublers, k0 (oldest) to k4 (needs the runtime)."""
        for i in range(5):
            await jetloom("start", "doubler", "--input", str(i), "--id", f"k{i}", "--wait")

    @pytest.mark.usefixtures("five")
    async def test_limit_and_offset(self, jetloom: Jetloom) -> None:
        """--offset/--limit show one slice, with a footer saying where the next one starts."""
        lines = (await jetloom("list", "--offset", "1", "--limit", "2")).stdout.splitlines()
        assert (["k1", "k2"], "instances 2-3 of 5; next: --offset 3 --limit 2") == (
            [line.split()[0] for line in lines[2:-1]],
            lines[-1],
        )

    @pytest.mark.usefixtures("five")
    async def test_page_as_json(self, jetloom: Jetloom) -> None:
        """--page N --limit M --json is the N-th page of M instances."""
        states = json.loads((await jetloom("list", "--page", "3", "--limit", "2", "--json")).stdout)
        assert ["k4"] == [s["instance_id"] for s in states]

    @pytest.mark.usefixtures("five")
    async def test_newest_first(self, jetloom: Jetloom) -> None:
        """--newest-first reverses the order."""
        states = json.loads((await jetloom("list", "--newest-first", "--json")).stdout)
        assert ["k4", "k3", "k2", "k1", "k0"] == [s["instance_id"] for s in states]

    async def test_offset_and_page_exclude_each_other(self) -> None:
        """--offset and --page together are a usage error."""
        result = await run_cli("list", "--offset", "1", "--page", "2")
        assert (2, 1) == (result.code, len(result.stderr.splitlines()))
        assert "not allowed with argument" in result.stderr


@pytest.mark.usefixtures("runtime")
class TestStatusPayloads:
    async def test_json_payloads_are_pretty_printed(
        self, jetloom: Jetloom, client: WorkflowClient
    ) -> None:
        """status prints a structured output as indented JSON under its label."""
        await _start_approval(jetloom, client, "sp1")
        await jetloom("raise", "sp1", "approve", "--data", "true")
        await client.wait_for_workflow_completion("sp1", timeout=20)
        lines = (await jetloom("status", "sp1")).stdout.splitlines()
        start = next(i for i, line in enumerate(lines) if line.startswith("output:"))
        assert ["output:   {", '  "order": "order-1",', '  "approved": true', "}"] == [
            lines[start],
            *(line[10:] for line in lines[start + 1 : start + 4]),
        ]


@pytest.mark.usefixtures("runtime")
class TestRichOutput:
    async def test_terminal_output_has_colours_and_boxes(
        self, nats_url: str, prefix: str, jetloom: Jetloom
    ) -> None:
        """With a terminal (FORCE_COLOR) list draws a rich table with coloured statuses."""
        await jetloom("start", "doubler", "--input", "1", "--id", "c1", "--wait")
        result = await run_cli(
            "list", "--nats-url", nats_url, "--prefix", prefix, env={"FORCE_COLOR": "1"}
        )
        assert (True, True) == ("┏" in result.stdout, "\x1b[32mCOMPLETED" in result.stdout)

    async def test_no_color_stays_plain(self, nats_url: str, prefix: str, jetloom: Jetloom) -> None:
        """--no-color keeps the plain table even where a terminal is forced."""
        await jetloom("start", "doubler", "--input", "1", "--id", "c2", "--wait")
        result = await run_cli(
            "list",
            "--no-color",
            "--nats-url",
            nats_url,
            "--prefix",
            prefix,
            env={"FORCE_COLOR": "1"},
        )
        assert ["instance", "workflow", "status", "created", "updated"] == (
            result.stdout.splitlines()[0].split()
        )
        assert "\x1b[" not in result.stdout


@pytest.mark.usefixtures("runtime")
class TestSteeringJson:
    async def test_each_steering_command_reports_json(
        self, jetloom: Jetloom, client: WorkflowClient
    ) -> None:
        """raise/pause/resume/terminate/purge --json print what they did as JSON objects."""
        await _start_approval(jetloom, client, "j1")
        outputs = [
            json.loads((await jetloom(*command, "--json")).stdout)
            for command in (["pause", "j1"], ["resume", "j1"], ["terminate", "j1"])
        ]
        await client.wait_for_workflow_completion("j1", timeout=20)
        outputs.append(json.loads((await jetloom("purge", "j1", "--json")).stdout))
        assert ["pause", "resume", "terminate", "purge"] == [o["action"] for o in outputs]
        assert (["j1"] * 4, 1) == ([o["instance_id"] for o in outputs], outputs[-1]["purged"])

    async def test_raise_json(self, jetloom: Jetloom, client: WorkflowClient) -> None:
        """raise --json echoes the event name and data."""
        await _start_approval(jetloom, client, "j2")
        report = json.loads(
            (await jetloom("raise", "j2", "approve", "--data", "1", "--json")).stdout
        )
        assert {"instance_id": "j2", "action": "raise", "event": "approve", "data": 1} == report

    async def test_start_json(self, jetloom: Jetloom) -> None:
        """start --wait --json prints only the final state as JSON."""
        state = json.loads(
            (
                await jetloom("start", "doubler", "--input", "4", "--id", "j3", "--wait", "--json")
            ).stdout
        )
        assert ("j3", "COMPLETED", 8) == (
            state["instance_id"],
            state["runtime_status"],
            state["output"],
        )


@pytest.mark.usefixtures("runtime")
class TestWatch:
    async def test_finished_instance_prints_its_end(self, jetloom: Jetloom) -> None:
        """watch on a finished instance prints its status line and output, exit 0."""
        await jetloom("start", "doubler", "--input", "3", "--id", "w1", "--wait")
        result = await jetloom("watch", "w1")
        lines = result.stdout.splitlines()
        assert (0, ["w1", "doubler", "COMPLETED"], ["status: COMPLETED", "output: 6"]) == (
            result.code,
            lines[0].split()[2:],
            lines[1:],
        )

    async def test_follows_an_instance_until_it_finishes(
        self, nats_url: str, prefix: str, client: WorkflowClient
    ) -> None:
        """watch --json prints one state per change and exits when the instance completes."""
        await client.schedule_new_workflow("approval", input="o", instance_id="w2")
        await client.wait_for_workflow_start("w2", timeout=20)
        proc = await _spawn("watch", "w2", "--json", "--timeout", "60", *_where(nats_url, prefix))
        assert proc.stdout is not None
        first = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
        await client.raise_workflow_event("w2", "approve", data=True)
        rest, _ = await asyncio.wait_for(proc.communicate(), 30)
        statuses = [first["runtime_status"]] + [
            json.loads(line)["runtime_status"] for line in rest.decode().splitlines()
        ]
        assert (0, "RUNNING", "COMPLETED") == (proc.returncode, statuses[0], statuses[-1])

    async def test_failed_instance_exits_1(self, jetloom: Jetloom) -> None:
        """watch exits 1 when the instance ended other than COMPLETED."""
        await jetloom("start", "failing", "--id", "w3", "--wait")
        result = await jetloom("watch", "w3")
        assert (1, "failure: ValueError: boom") == (result.code, result.stdout.splitlines()[-1])

    async def test_all_once_shows_only_running(
        self, jetloom: Jetloom, client: WorkflowClient
    ) -> None:
        """watch --once without an id lists the running instances only."""
        await jetloom("start", "doubler", "--input", "1", "--id", "w4", "--wait")
        await _start_approval(jetloom, client, "w5")
        states = [
            json.loads(line)
            for line in (await jetloom("watch", "--once", "--json")).stdout.splitlines()
        ]
        assert [("w5", "RUNNING")] == [(s["instance_id"], s["runtime_status"]) for s in states]

    async def test_timeout_bounds_a_watch(self, jetloom: Jetloom, client: WorkflowClient) -> None:
        """watch --timeout stops following a still-running instance, exit 0."""
        await _start_approval(jetloom, client, "w6")
        result = await jetloom("watch", "w6", "--timeout", "0.5")
        assert (0, "RUNNING") == (result.code, result.stdout.split()[-1])

    async def test_all_reports_a_finish(
        self, nats_url: str, prefix: str, client: WorkflowClient
    ) -> None:
        """watch without an id prints running instances and then their end."""
        await client.schedule_new_workflow("approval", input="o", instance_id="w7")
        await client.wait_for_workflow_start("w7", timeout=20)
        proc = await _spawn("watch", "--timeout", "60", *_where(nats_url, prefix))
        assert proc.stdout is not None
        first = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().split()
        await client.raise_workflow_event("w7", "approve", data=True)
        second = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().split()
        proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.communicate(), 30)
        assert (["w7", "approval", "RUNNING"], ["w7", "approval", "COMPLETED"], 0) == (
            first[2:],
            second[2:],
            proc.returncode,
        )

    async def test_all_says_so_when_nothing_runs(self, jetloom: Jetloom) -> None:
        """watch without an id, printing to a pipe while nothing runs, says it is watching."""
        result = await jetloom("watch", "--timeout", "1")
        assert (0, ["no instance is running; watching for changes (Ctrl-C stops)"]) == (
            result.code, result.stdout.splitlines()
        )

    async def test_unknown_instance(self, jetloom: Jetloom) -> None:
        """watch of an unknown id is one error line."""
        assert_one_line_error(await jetloom("watch", "nope"), "no instance 'nope'")


@pytest.mark.usefixtures("runtime")
class TestStats:
    async def test_json_counts_and_consumers(
        self, jetloom: Jetloom, client: WorkflowClient
    ) -> None:
        """stats --json counts instances by status and lists the work consumers' backlog."""
        await jetloom("start", "doubler", "--input", "1", "--id", "st1", "--wait")
        await jetloom("start", "failing", "--id", "st2", "--wait")
        await _start_approval(jetloom, client, "st3")
        stats = json.loads((await jetloom("stats", "--json")).stdout)
        by_status = stats["instances"]["by_status"]
        assert (3, 1, 1, 1) == (
            stats["instances"]["total"],
            by_status["COMPLETED"],
            by_status["FAILED"],
            by_status["RUNNING"],
        )
        consumers = {c["consumer"]: c for c in stats["consumers"]}
        assert ({"workflows", "activities-default"}, "default", 0) == (
            set(consumers),
            consumers["activities-default"]["task_queue"],
            consumers["activities-default"]["pending"],
        )

    async def test_plain_tables(self, jetloom: Jetloom) -> None:
        """stats prints the status counts and a consumer table."""
        await jetloom("start", "doubler", "--input", "1", "--id", "st4", "--wait")
        lines = (await jetloom("stats")).stdout.splitlines()
        assert "instances: 1" == lines[0]
        assert ["COMPLETED", "1"] in [line.split() for line in lines]
        assert any(line.startswith("activities-default  default") for line in lines)


@pytest.mark.usefixtures("runtime")
class TestRerun:
    async def test_rerun_from_an_event_of_history(self, jetloom: Jetloom) -> None:
        """history --json numbers events as rerun --from-event takes them; the rerun runs that
        activity again with the new input."""
        await jetloom("start", "doubler", "--input", "21", "--id", "rr1", "--wait")
        events = json.loads((await jetloom("history", "rr1", "--json")).stdout)
        [scheduled] = [e["event_id"] for e in events if e["type"] == "task_scheduled"]
        assert list(range(len(events))) == [e["event_id"] for e in events]

        result = await jetloom(
            "rerun", "rr1", "--from-event", str(scheduled), "--id", "rr1-again",
            "--input", "50", "--wait",
        )

        assert (0, ["rr1-again", "status: COMPLETED", "output: 100"]) == (
            result.code, result.stdout.splitlines()
        )

    async def test_an_event_that_is_no_activity_is_one_error_line(
        self, jetloom: Jetloom
    ) -> None:
        """Rerunning from an event other than an activity's task_scheduled says what it is."""
        await jetloom("start", "doubler", "--input", "1", "--id", "rr2", "--wait")
        assert_one_line_error(
            await jetloom("rerun", "rr2", "--from-event", "1"),
            "event 1 of 'rr2' is workflow_task_started",
        )


@pytest.mark.usefixtures("runtime")
class TestSchedule:
    async def test_create_list_pause_resume_delete(self, jetloom: Jetloom) -> None:
        """A schedule's whole life from the command line."""
        created = await jetloom(
            "schedule", "create", "nightly", "doubler", "--cron", "0 2 * * *", "--input", "7"
        )
        assert (0, "schedule nightly starts doubler on cron '0 2 * * *'") == (
            created.code, created.stdout.strip()
        )
        await jetloom("schedule", "create", "often", "doubler", "--every", "5m")
        assert 0 == (await jetloom("schedule", "pause", "often")).code

        listed = json.loads((await jetloom("schedule", "list", "--json")).stdout)
        table = (await jetloom("schedule", "list")).stdout.splitlines()

        assert [("nightly", "0 0 2 * * *", None, False), ("often", None, 300.0, True)] == [
            (s["schedule_id"], s["cron"], s["every_s"], s["paused"]) for s in listed
        ]
        assert ["often", "doubler", "every", "300s", "skip", "paused", "-"] == table[3].split()
        assert 0 == (await jetloom("schedule", "resume", "often")).code
        assert 0 == (await jetloom("schedule", "delete", "often")).code
        assert 0 == (await jetloom("schedule", "delete", "nightly")).code
        assert "no schedules" == (await jetloom("schedule", "list")).stdout.strip()

    async def test_mistakes_are_one_error_line(self, jetloom: Jetloom) -> None:
        """A bad cron expression, an existing id and an unknown one."""
        assert_one_line_error(
            await jetloom("schedule", "create", "s1", "doubler", "--cron", "61 * * * *"),
            "'61' is outside 0-59",
        )
        await jetloom("schedule", "create", "s1", "doubler", "--every", "1h")
        assert_one_line_error(
            await jetloom("schedule", "create", "s1", "doubler", "--every", "1h"),
            "schedule 's1' exists",
        )
        assert_one_line_error(await jetloom("schedule", "pause", "nope"), "no schedule 'nope'")
        await jetloom("schedule", "delete", "s1")

    async def test_a_cron_in_a_time_zone(self, jetloom: Jetloom) -> None:
        """--time-zone reads the cron in that zone; list shows the zone (UTC when none), and
        an unknown zone or one with --every is one error line."""
        created = await jetloom(
            "schedule", "create", "tz", "doubler", "--cron", "30 2 * * *",
            "--time-zone", "Europe/Amsterdam",
        )
        await jetloom("schedule", "create", "utc", "doubler", "--cron", "0 2 * * *")
        listed = json.loads((await jetloom("schedule", "list", "--json")).stdout)
        table = (await jetloom("schedule", "list")).stdout.splitlines()

        assert (0, "schedule tz starts doubler on cron '30 2 * * *' in Europe/Amsterdam") == (
            created.code, created.stdout.strip()
        )
        assert [("tz", "Europe/Amsterdam"), ("utc", None)] == [
            (s["schedule_id"], s["time_zone"]) for s in listed
        ]
        assert [["cron", "0", "30", "2", "*", "*", "*", "Europe/Amsterdam"],
                ["cron", "0", "0", "2", "*", "*", "*", "UTC"]] == [
            row.split()[2:10] for row in table[2:4]
        ]
        assert_one_line_error(
            await jetloom("schedule", "create", "s2", "doubler", "--cron", "0 2 * * *",
                          "--time-zone", "Mars/Olympus"),
            "unknown time zone 'Mars/Olympus'",
        )
        assert_one_line_error(
            await jetloom("schedule", "create", "s3", "doubler", "--every", "1h",
                          "--time-zone", "Europe/Amsterdam"),
            "only cron schedules take a time zone",
        )
        for schedule_id in ("tz", "utc"):
            await jetloom("schedule", "delete", schedule_id)


@pytest.mark.usefixtures("runtime")
class TestStatsStorage:
    async def test_storage_per_stream(self, jetloom: Jetloom, prefix: str) -> None:
        """stats shows the messages and bytes each stream of the prefix stores."""
        await jetloom("start", "doubler", "--input", "1", "--id", "sz1", "--wait")
        stats = json.loads((await jetloom("stats", "--json")).stdout)
        storage = {s["stream"]: s for s in stats["storage"]}
        history = storage[f"{prefix.upper()}_HISTORY"]
        assert history["messages"] > 0 and history["bytes"] > 0
        assert {f"{prefix.upper()}_WORK", f"KV_{prefix}_instances"} <= set(storage)
        lines = (await jetloom("stats")).stdout.splitlines()
        assert any(line.split()[:1] == [f"{prefix.upper()}_HISTORY"] for line in lines)
        assert any(line.startswith("total") for line in lines)
