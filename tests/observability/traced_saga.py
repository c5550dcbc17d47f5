"""A saga-shaped workflow for the observability tests: reserve, three parallel quotes, register;
when registration fails, compensate (restore) and fail."""

from __future__ import annotations

import asyncio

import structlog
from opentelemetry import trace

from engine import ActivityContext, TaskFailedError, WorkflowContext, WorkflowRuntime, when_all

SEEN: list[dict[str, object]] = []
"""What activities saw of the log context and the current span (in-process tests read it)."""


def build(wfr: WorkflowRuntime) -> None:
    """Register the saga's workflows and activities on ``wfr``."""

    @wfr.activity(name="reserve")
    async def reserve(ctx: ActivityContext, order: dict[str, object]) -> bool:
        span = trace.get_current_span().get_span_context()
        SEEN.append({**structlog.contextvars.get_contextvars(), "span_id": span.span_id})
        structlog.get_logger("saga").info("reserve.done")
        return True

    @wfr.activity(name="quote")
    async def quote(ctx: ActivityContext, provider: str) -> int:
        await asyncio.sleep(0.3)  # long enough for the three quotes to overlap
        return {"ups": 12, "dhl": 9, "fedex": 11}[provider]

    @wfr.activity(name="register")
    def register(ctx: ActivityContext, shipment: dict[str, object]) -> str:
        if shipment["fail"]:
            raise RuntimeError(f"provider {shipment['provider']} refused the shipment")
        return "SHIP-1"

    @wfr.activity(name="restore")
    async def restore(ctx: ActivityContext, order: dict[str, object]) -> None:
        return None

    @wfr.workflow(name="saga")
    async def saga(ctx: WorkflowContext, order: dict[str, object]) -> str:
        await ctx.call_activity(reserve, input=order)
        providers = ["ups", "dhl", "fedex"]
        prices = await when_all([ctx.call_activity(quote, input=p) for p in providers])
        cheapest = providers[prices.index(min(prices))]
        try:
            return await ctx.call_activity(
                register, input={"provider": cheapest, "fail": order.get("fail", False)}
            )
        except TaskFailedError:
            await ctx.call_activity(restore, input=order)
            raise

    @wfr.workflow(name="parent_saga")
    async def parent_saga(ctx: WorkflowContext, order: dict[str, object]) -> str:
        return await ctx.call_child_workflow(saga, input=order)
