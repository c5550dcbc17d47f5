"""How ``jetloom dev`` hosts the runtimes of several modules in one: their settings."""

from __future__ import annotations

from datetime import timedelta

import pytest

from engine import WorkflowContext, WorkflowRuntime
from engine.cli.dev import _one_runtime_each
from engine.cli.errors import CliError
from engine.core.retention import RetentionPolicy


def _module_runtime(workflow_name: str, **settings: object) -> WorkflowRuntime:
    """A module's runtime (never started) hosting one workflow named ``workflow_name``."""
    wfr = WorkflowRuntime("nats://127.0.0.1:1", prefix="devmods", **settings)  # type: ignore[arg-type]

    async def workflow(ctx: WorkflowContext) -> None:
        return None

    wfr.register_workflow(workflow, name=workflow_name)
    return wfr


class TestOneRuntimeForModules:
    def test_capacity_settings_take_the_largest(self) -> None:
        """The one runtime holds as much as the most demanding module asked for, and says
        which setting it raised and from whom."""
        a = _module_runtime("a", max_concurrent_activities=5, activity_lease=timedelta(minutes=5))
        b = _module_runtime("b", max_concurrent_workflow_tasks=300, max_concurrent_activities=40)
        ((labels, host, notes),) = _one_runtime_each({("a.py", "wfr"): a, ("b.py", "wfr"): b})
        assert (["a.py:wfr", "b.py:wfr"], a) == (labels, host)
        assert (300, 40, timedelta(minutes=5)) == (
            host.max_concurrent_workflow_tasks, host.max_concurrent_activities,
            host.activity_lease,
        )
        assert [
            "max_concurrent_workflow_tasks=300 (the largest, from b.py:wfr)",
            "max_concurrent_activities=40 (the largest, from b.py:wfr)",
            "activity_lease=0:05:00 (the largest, from a.py:wfr)",
        ] == notes

    def test_modules_that_agree_get_no_notes(self) -> None:
        """Modules with the same settings are hosted as they are, without notes."""
        a = _module_runtime("a", max_concurrent_activities=8)
        b = _module_runtime("b", max_concurrent_activities=8)
        ((_, host, notes),) = _one_runtime_each({("a.py", "wfr"): a, ("b.py", "wfr"): b})
        assert (8, []) == (host.max_concurrent_activities, notes)

    @pytest.mark.parametrize(
        ("setting", "a_value", "b_value"),
        [
            ("app_id", "shop", "billing"),
            ("retention", RetentionPolicy(completed=timedelta(days=1)), None),
            ("stall_retry_max", timedelta(seconds=5), timedelta(seconds=30)),
        ],
    )
    def test_settings_that_must_agree_are_refused_when_they_differ(
        self, setting: str, a_value: object, b_value: object
    ) -> None:
        """Modules that set a setting no single value serves differently are refused,
        naming the setting, both modules and what each asked for."""
        a = _module_runtime("a", **{setting: a_value})
        b = _module_runtime("b", **{setting: b_value})
        with pytest.raises(CliError) as refused:
            _one_runtime_each({("a.py", "wfr"): a, ("b.py", "wfr"): b})
        message = str(refused.value)
        for fragment in ("a.py:wfr", "b.py:wfr", setting, str(a.__dict__[setting])):
            assert fragment in message
        assert "host the modules in separate processes" in message
