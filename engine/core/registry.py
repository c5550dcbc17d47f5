"""Registry of the workflows and activities a runtime hosts."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from engine.core.codec import Signature, inspect_signature
from engine.core.errors import ActivityNotRegisteredError, WorkflowNotRegisteredError

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def check_name(kind: str, name: str) -> str:
    """Workflow and activity names travel as subject tokens: letters, digits, '-', '_'."""
    if not _NAME.match(name):
        raise ValueError(
            f"invalid {kind} name {name!r}: use 1-128 letters, digits, '-' or '_' "
            "(it becomes part of a NATS subject)"
        )
    return name


def workflow_name(workflow: Callable[..., Any] | str) -> str:
    """The registered name of a workflow given as a function or a name."""
    return check_name(
        "workflow",
        workflow
        if isinstance(workflow, str)
        else getattr(workflow, "__jetloom_name__", workflow.__name__),
    )


@dataclass(frozen=True)
class WorkflowDefinition:
    """One registered workflow function (one version of a workflow name)."""

    name: str
    version: str
    fn: Callable[..., Any]
    signature: Signature


@dataclass(frozen=True)
class ActivityDefinition:
    """One registered activity function."""

    name: str
    fn: Callable[..., Any]
    signature: Signature
    is_async: bool
    start_to_close_timeout: timedelta | None = None


@dataclass
class _Versions:
    by_version: dict[str, WorkflowDefinition] = field(default_factory=dict)
    latest: str = ""


class Registry:
    """Workflows (with their versions) and activities by name."""

    def __init__(self) -> None:
        self._workflows: dict[str, _Versions] = {}
        self._activities: dict[str, ActivityDefinition] = {}

    def add_workflow(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        version: str = "",
        is_latest: bool = True,
    ) -> WorkflowDefinition:
        """Register ``fn`` as workflow ``name`` (default: its function name)."""
        wf_name = check_name("workflow", name or fn.__name__)
        versions = self._workflows.setdefault(wf_name, _Versions())
        if version in versions.by_version:
            what = f"version {version!r} of workflow" if version else "workflow"
            raise ValueError(f"{what} {wf_name!r} is already registered")
        definition = WorkflowDefinition(wf_name, version, fn, inspect_signature(fn))
        versions.by_version[version] = definition
        if is_latest or not versions.latest:
            versions.latest = version
        return definition

    def add_activity(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        start_to_close_timeout: timedelta | None = None,
    ) -> ActivityDefinition:
        """Register ``fn`` as activity ``name`` (default: its function name)."""
        act_name = check_name("activity", name or fn.__name__)
        if act_name in self._activities:
            raise ValueError(f"activity {act_name!r} is already registered")
        definition = ActivityDefinition(
            act_name,
            fn,
            inspect_signature(fn),
            inspect.iscoroutinefunction(fn),
            start_to_close_timeout,
        )
        self._activities[act_name] = definition
        return definition

    def workflow(self, name: str, version: str | None = None) -> WorkflowDefinition:
        """The workflow to run: the given version, or the latest for a new instance."""
        versions = self._workflows.get(name)
        if versions is None:
            registered = ", ".join(self.workflow_names) or "none"
            raise WorkflowNotRegisteredError(
                f"unknown workflow {name!r} (registered: {registered}); "
                "check the name in the start event"
            )
        key = versions.latest if version is None else version
        definition = versions.by_version.get(key)
        if definition is None:
            raise WorkflowNotRegisteredError(
                f"workflow {name!r} has no version {key!r} registered "
                f"(registered: {', '.join(repr(v) for v in versions.by_version)}); "
                "deploy the version this instance started with"
            )
        return definition

    def activity(self, name: str) -> ActivityDefinition:
        """The activity registered as ``name``."""
        definition = self._activities.get(name)
        if definition is None:
            raise ActivityNotRegisteredError(
                f"unknown activity {name!r} (registered here: "
                f"{', '.join(self._activities) or 'none'})"
            )
        return definition

    def clashes(self, other: Registry) -> list[str]:
        """What ``other`` registers under a name this registry holds something else under,
        e.g. ``["workflow 'order'", "activity 'charge'"]`` (the same functions are no clash)."""

        def versions(v: _Versions) -> tuple[str, dict[str, Callable[..., Any]]]:
            return v.latest, {key: d.fn for key, d in v.by_version.items()}

        found = [
            f"workflow {name!r}"
            for name, theirs in other._workflows.items()
            if name in self._workflows and versions(self._workflows[name]) != versions(theirs)
        ]
        found += [
            f"activity {name!r}"
            for name, theirs in other._activities.items()
            if name in self._activities and self._activities[name] != theirs
        ]
        return found

    def include(self, other: Registry) -> None:
        """Host everything ``other`` registers too (names it shares must not ``clash``)."""
        for name, theirs in other._workflows.items():
            self._workflows.setdefault(name, theirs)
        for name, activity in other._activities.items():
            self._activities.setdefault(name, activity)

    def has_workflow(self, name: str) -> bool:
        """True if a workflow of that name is registered."""
        return name in self._workflows

    @property
    def workflow_names(self) -> list[str]:
        """Names of the registered workflows."""
        return sorted(self._workflows)

    @property
    def activity_names(self) -> list[str]:
        """Names of the registered activities."""
        return sorted(self._activities)
