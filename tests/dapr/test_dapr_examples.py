"""Dapr's own workflow examples (dapr/python-sdk examples/workflow), each copied into
tests/dapr/examples with only its import line changed, run as real processes against the
session's nats-server. Each must print what the examples' README says it prints.

The README's ``expected_stdout_lines`` are read from the copy of that README kept beside the
examples (README.dapr.md). Examples whose README shows sample output instead (human approval,
monitor, child workflow) are held to that sample; history propagation and async activities to
the lines dapr/python-sdk's own example tests expect (tests/examples/test_workflow.py).
"""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.dapr.dapr_examples_support import missing_lines, steps_running


def assert_printed(example, expected: list[str], *, ordered: bool = True) -> None:
    """Every expected line was printed (in order, unless not ``ordered``)."""
    missing = missing_lines(expected, example.stdout, ordered=ordered)
    assert [] == missing, example.report()


class TestReadmeSteps:
    """The examples the README runs with expected_stdout_lines."""

    @pytest.mark.parametrize("script", ["simple.py", "simple_aio_client.py"])
    def test_simple(self, run_example, script: str) -> None:
        """Activities, retries, a retried child workflow, pause/resume (SUSPENDED, then
        RUNNING), an event and purge, with the sync or the aio client."""
        (step,) = steps_running(script)
        example = run_example(script, APP_ID=step.app_ids[script]).wait(90)
        assert_printed(example, step.expected_lines, ordered=step.ordered)
        assert 0 == example.proc.returncode, example.report()

    def test_task_chaining(self, run_example) -> None:
        """Three chained activities; the client prints the final status enum."""
        (step,) = steps_running("task_chaining.py")
        example = run_example("task_chaining.py", APP_ID="wfexample").wait(60)
        assert_printed(example, step.expected_lines, ordered=step.ordered)

    def test_fan_out_fan_in(self, run_example) -> None:
        """Ten parallel activities (plain ``def``, 5 s each) and their sum."""
        (step,) = steps_running("fan_out_fan_in.py")
        example = run_example("fan_out_fan_in.py", APP_ID="wfexample").wait(90)
        assert_printed(example, step.expected_lines, ordered=step.ordered)

    def test_pydantic_models(self, run_example) -> None:
        """Pydantic models in and out: annotated inputs arrive as models, outputs are JSON."""
        (step,) = steps_running("pydantic_models.py")
        example = run_example("pydantic_models.py", APP_ID="wf-pydantic-example").wait(60)
        assert_printed(example, step.expected_lines, ordered=step.ordered)

    def test_multi_app(self, run_example, prefix: str) -> None:
        """Three apps (APP_ID) calling each other's workflows and activities by app_id, in the
        README's three modes (normal, failing activity, failing workflow); as with Dapr, no
        app is ever handed a workflow it does not host."""
        failures = []
        for mode, step in enumerate(steps_running("multi-app1.py")):
            env = {**step.env, "JETLOOM_PREFIX": f"{prefix}m{mode}"}  # a namespace per mode
            apps = {
                script: run_example(script, APP_ID=step.app_ids[script], **env)
                for script in ("multi-app3.py", "multi-app2.py")
            }
            first = run_example("multi-app1.py", APP_ID=step.app_ids["multi-app1.py"],
                                **env).wait(60)
            apps = {name: example.stop() for name, example in apps.items()}
            apps["multi-app1.py"] = first
            for script, example in apps.items():
                label = f"app{script[-4]} - "
                expected = [line for line in step.expected_lines if line.startswith(label)]
                missing = missing_lines(expected, example.stdout, ordered=True)
                misrouted = "WorkflowNotRegisteredError" in example.stderr
                if missing or misrouted:
                    failures.append((step.env, script, missing, misrouted))
        assert [] == failures

    def test_versioning(self, run_example) -> None:
        """Versioned workflows and patches, stalled instances, and (part 2, a new process)
        the stalled instances finishing on the code that fixes them."""
        (step,) = steps_running("versioning.py")
        app_id = step.app_ids["versioning.py"]
        part1 = run_example("versioning.py", "part1", APP_ID=app_id).wait(120)
        part2 = run_example("versioning.py", "part2", APP_ID=app_id).wait(60)
        output = part1.stdout + part2.stdout
        assert [] == missing_lines(step.expected_lines, output, ordered=False), (
            part1.report() + part2.report()
        )


class TestReadmeSamples:
    """The examples whose README shows sample output (or whose lines the SDK tests keep)."""

    def test_human_approval_times_out(self, run_example) -> None:
        """Nobody presses ENTER: the approval request names the order as Dapr decodes a
        dataclass (a namespace), and the client's wait times out.

        The approval path itself raises the event through Dapr's core ``DaprClient``
        (a sidecar API, not the workflow extension), so only this path can run here.
        """
        example = run_example("human_approval.py", "--timeout", "3").wait(60)
        assert_printed(example, [
            "*** Requesting approval from user for order: "
            "namespace(cost=2000, product='MyProduct', quantity=1)",
            "*** Workflow timed out!",
        ])

    def test_monitor(self, run_example) -> None:
        """An eternal monitor (continue_as_new) reports the job's health until ENTER."""
        example = run_example("monitor.py", stdin=subprocess.PIPE)
        example.read_until(r"Job 'job1' is (healthy|unhealthy)\.", timeout=60)
        assert example.proc.stdin is not None
        example.proc.stdin.write("\n")
        example.proc.stdin.flush()
        printed = example.stdout
        example.wait(30)
        example.stdout = printed + example.stdout
        assert "Workflow started. Instance ID: job1" in example.lines, example.report()
        assert any(re.fullmatch(r"Job 'job1' is (healthy|unhealthy)\.", line)
                   for line in example.lines), example.report()
        assert 0 == example.proc.returncode, example.report()

    def test_child_workflow(self, run_example) -> None:
        """A workflow calls a child with an instance id of its own making. As under Dapr,
        the workflow replays on every task, so its unguarded print may come more than once,
        always naming the same child."""
        example = run_example("child_workflow.py").wait(60)
        calling = [line for line in example.lines if line.startswith("*** Calling child")]
        assert 1 == len(set(calling)), example.report()
        child_id = calling[0].rsplit(" ", 1)[1]
        assert child_id.endswith("-child")
        assert_printed(example, [f"*** Child workflow {child_id} called"])

    def test_history_propagation(self, run_example) -> None:
        """A child workflow and an activity read the history their caller propagated."""
        example = run_example("history_propagation.py",
                              APP_ID="workflow-history-propagation").wait(60)
        expected = [
            "*** validating merchant merchant-42",
            "*** process_payment received parent context for merchant 'merchant-42'",
            "*** log_summary saw parent on app workflow-history-propagation with "
            'validate_merchant -> completed=True output={"merchant_id": "merchant-42", '
            '"valid": true}',
            '*** workflow completed: status=COMPLETED output={"child": "paid", '
            '"audit": "logged"}',
        ]
        assert_printed(example, expected)

    def test_async_activities(self, run_example) -> None:
        """``async def`` activities fan out on the runtime's loop; a plain one sums up."""
        example = run_example("async_activities.py",
                              APP_ID="workflow-async-activities").wait(60)
        assert_printed(example, [f"[async] payload {i}: 2048B in -> 1024B out"
                                 for i in range(5)], ordered=False)
        assert_printed(example, [
            "[sync] 5 results, 5120 bytes",
            "Workflow completed! Status: COMPLETED",
            "Workflow result: 5 results, 5120 bytes",
        ])
