"""Benchmark workflows and activities, hosted by worker processes (``bench/worker.py``).

All activities are no-ops so the figures measure the engine, not the work.
"""

from __future__ import annotations

from engine import ActivityContext, WorkflowContext, WorkflowRuntime, when_all


def build_runtime(nats_url: str, prefix: str, *, workflows: bool, activities: bool,
                  max_tasks: int | None = None) -> WorkflowRuntime:
    """A runtime hosting the benchmark workflows and/or activities.

    With ``max_tasks`` None the runtime gets no tuning argument at all: the concurrency limits
    are its defaults, as in a user's ``WorkflowRuntime(url)``.
    """
    if max_tasks is None:
        wfr = WorkflowRuntime(nats_url, prefix=prefix)
    else:
        wfr = WorkflowRuntime(
            nats_url,
            prefix=prefix,
            max_concurrent_workflow_tasks=max_tasks,
            max_concurrent_activities=max_tasks,
        )
    if activities:

        @wfr.activity(name="noop")
        async def noop(ctx: ActivityContext, value: int) -> int:
            return value

    if workflows:

        @wfr.workflow(name="order_saga")
        async def order_saga(ctx: WorkflowContext, order: int) -> int:
            reserved = await ctx.call_activity("noop", input=order)
            quotes = await when_all([ctx.call_activity("noop", input=i) for i in range(3)])
            return int(await ctx.call_activity("noop", input=reserved + min(quotes)))

        @wfr.workflow(name="chain3")
        async def chain3(ctx: WorkflowContext, value: int) -> int:
            for _ in range(3):
                value = await ctx.call_activity("noop", input=value)
            return value

        @wfr.workflow(name="fanout")
        async def fanout(ctx: WorkflowContext, width: int) -> int:
            results = await when_all([ctx.call_activity("noop", input=i) for i in range(width)])
            return sum(results)

        @wfr.workflow(name="long_history")
        async def long_history(ctx: WorkflowContext, steps: int) -> list[float]:
            """Sequential steps; returns the workflow-clock time of each step boundary."""
            marks = [ctx.current_utc_datetime.timestamp()]
            for i in range(steps):
                await ctx.call_activity("noop", input=i)
                marks.append(ctx.current_utc_datetime.timestamp())
            return marks

    return wfr
