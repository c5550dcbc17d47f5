"""Example workflows for the CLI tests, hosted in-process or by ``jetloom dev`` on this file.

``jetloom dev`` sets NATS_URL and JETLOOM_PREFIX before importing a module, so the module-level
runtime below lands on the server and namespace the command was given.
"""

from __future__ import annotations

import os

from engine import ActivityContext, WorkflowContext, WorkflowRuntime


async def double(ctx: ActivityContext, x: int) -> int:
    """Twice the input."""
    return 2 * x


async def doubler(ctx: WorkflowContext, x: int) -> int:
    """Doubles its input through one activity."""
    return await ctx.call_activity(double, input=x)


async def approval(ctx: WorkflowContext, order: str) -> dict[str, object]:
    """Waits for an external 'approve' event and returns the decision."""
    decision = await ctx.wait_for_external_event("approve")
    return {"order": order, "approved": decision}


async def failing(ctx: WorkflowContext) -> None:
    """Always fails."""
    raise ValueError("boom")


def build_runtime(nats_url: str | None = None, prefix: str = "jetloom") -> WorkflowRuntime:
    """A runtime hosting every example workflow and activity."""
    runtime = WorkflowRuntime(nats_url, prefix=prefix)
    runtime.register_activity(double)
    for workflow in (doubler, approval, failing):
        runtime.register_workflow(workflow)
    return runtime


wfr = build_runtime(prefix=os.environ.get("JETLOOM_PREFIX", "jetloom"))
