"""engine.dapr mirrors dapr.ext.workflow: the same public names, signatures and defaults.

Compared with the real package (a test dependency, pinned), so a Dapr release that adds or
changes a name shows up here.
"""

from __future__ import annotations

import enum
import inspect
from typing import Any

import dapr.ext.workflow as dapr_wf
import dapr.ext.workflow.aio as dapr_wf_aio
import pytest

import engine.dapr as ours
import engine.dapr.aio as ours_aio

NOT_PROVIDED = {"DaprMCPClient", "MCPToolDef"}
"""MCP tools are workflows built into Dapr's sidecar: there is no sidecar here."""


def _default(value: Any) -> Any:
    return repr(value) if value is not inspect.Parameter.empty else value


def incompatibilities(theirs: Any, mine: Any) -> list[str]:
    """How ``mine``'s signature fails to accept every call ``theirs`` accepts: same parameter
    names, kinds and defaults in order; extra parameters only keyword-only with defaults."""
    a, b = inspect.signature(theirs), inspect.signature(mine)
    problems = []
    mine_params = list(b.parameters.values())
    for i, p in enumerate(a.parameters.values()):
        if i >= len(mine_params):
            problems.append(f"missing parameter {p.name}")
            continue
        q = mine_params[i]
        if (p.name, p.kind, _default(p.default)) != (q.name, q.kind, _default(q.default)):
            problems.append(f"{p} != {q}")
    for q in mine_params[len(a.parameters):]:
        if q.kind is not inspect.Parameter.KEYWORD_ONLY or q.default is inspect.Parameter.empty:
            problems.append(f"extra parameter {q} must be keyword-only with a default")
    return problems


def public_methods(cls: type) -> dict[str, Any]:
    return {name: value for name, value in vars(cls).items()
            if not name.startswith("_") and callable(value)}


class TestNames:
    """Every public name of Dapr's workflow package exists in engine.dapr."""

    def test_sync_package(self) -> None:
        """dapr.ext.workflow's names, but for the MCP client."""
        assert [] == sorted(set(dapr_wf.__all__) - NOT_PROVIDED - set(ours.__all__))

    def test_aio_package(self) -> None:
        """dapr.ext.workflow.aio's names, but for the MCP client."""
        assert [] == sorted(set(dapr_wf_aio.__all__) - NOT_PROVIDED - set(ours_aio.__all__))

    @pytest.mark.parametrize("name", ["WorkflowStatus", "PropagationScope",
                                      "WorkflowHistoryEventType"])
    def test_enums(self, name: str) -> None:
        """Enums have Dapr's members and values."""
        theirs: type[enum.Enum] = getattr(dapr_wf, name)
        mine: type[enum.Enum] = getattr(ours, name)
        assert [(m.name, m.value) for m in theirs] == [(m.name, m.value) for m in mine]


CLASSES = [
    (dapr_wf.WorkflowRuntime, ours.WorkflowRuntime),
    (dapr_wf.DaprWorkflowClient, ours.DaprWorkflowClient),
    (dapr_wf_aio.DaprWorkflowClient, ours_aio.DaprWorkflowClient),
    (dapr_wf.DaprWorkflowContext, ours.DaprWorkflowContext),
    (dapr_wf.WorkflowActivityContext, ours.WorkflowActivityContext),
    (dapr_wf.RetryPolicy, ours.RetryPolicy),
    (dapr_wf.WorkflowState, ours.WorkflowState),
    (dapr_wf.PropagatedHistory, ours.PropagatedHistory),
    (dapr_wf.WorkflowResult, ours.WorkflowResult),
]


class TestSignatures:
    """Methods take Dapr's parameters with Dapr's defaults, and are async where Dapr's are."""

    @pytest.mark.parametrize(("theirs", "mine"), CLASSES, ids=lambda c: c.__qualname__)
    def test_methods(self, theirs: type, mine: type) -> None:
        """Each public method of Dapr's class exists here with a compatible signature."""
        problems = {}
        for name, method in public_methods(theirs).items():
            if name == "from_proto":  # builds from Dapr's protobuf: nothing to build from
                continue
            candidate = getattr(mine, name, None)
            if candidate is None:
                problems[name] = ["missing"]
                continue
            found = incompatibilities(method, candidate)
            if inspect.iscoroutinefunction(method) != inspect.iscoroutinefunction(candidate):
                found.append("async-ness differs")
            if found:
                problems[name] = found
        assert {} == problems

    @pytest.mark.parametrize(("theirs", "mine"), CLASSES, ids=lambda c: c.__qualname__)
    def test_properties(self, theirs: type, mine: type) -> None:
        """Each public property of Dapr's class exists here."""
        wanted = {n for n, v in vars(theirs).items() if isinstance(v, property)
                  and not n.startswith("_")}
        assert set() == {n for n in wanted if not hasattr(mine, n)}

    @pytest.mark.parametrize("cls", [dapr_wf.WorkflowRuntime, dapr_wf.DaprWorkflowClient,
                                     dapr_wf_aio.DaprWorkflowClient, dapr_wf.RetryPolicy,
                                     dapr_wf.FailureDetails, dapr_wf.TaskFailedError,
                                     dapr_wf.WorkflowHistoryEvent,
                                     dapr_wf.WorkflowInstanceIdPage,
                                     dapr_wf.ActivityResult, dapr_wf.ChildWorkflowResult],
                             ids=lambda c: c.__qualname__)
    def test_constructors(self, cls: type) -> None:
        """Constructors users call take Dapr's arguments."""
        mine = getattr(ours, cls.__name__, None) or getattr(ours_aio, cls.__name__)
        if cls is dapr_wf_aio.DaprWorkflowClient:
            mine = ours_aio.DaprWorkflowClient
        assert [] == incompatibilities(cls, mine)

    @pytest.mark.parametrize("name", ["when_all", "when_any", "alternate_name"])
    def test_functions(self, name: str) -> None:
        """Module functions take Dapr's arguments."""
        assert [] == incompatibilities(getattr(dapr_wf, name), getattr(ours, name))

    def test_runtime_context_helpers(self) -> None:
        """The deterministic helpers Dapr's workflow context reaches through to its inner
        context are there too."""
        helpers = ["now", "random", "uuid4", "new_guid", "random_string", "random_int",
                   "random_choice", "now_with_sequence", "current_utc_datetime_with_sequence",
                   "app_id"]
        assert [] == [h for h in helpers if not hasattr(ours.DaprWorkflowContext, h)]
