"""The orchestrator: hosts the ``order_processing`` workflow (the saga), no activities.

Usage::

    python -m sample_order_app.orchestrator [--providers swift,budget,parcelly]
        [--quote-timeout 1.5] [--shipping-attempts 4]

All orchestrators of one namespace must run with the same flags: they shape the workflow's
commands, which replays must reproduce.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import msgspec

from engine import (
    RetryPolicy,
    Task,
    TaskFailedError,
    WorkflowContext,
    WorkflowRuntime,
    run_service,
    when_any,
)
from sample_order_app._service import configure_logging, new_runtime, serve, service_parser
from sample_order_app.model import (
    Order,
    OrderResult,
    Quote,
    QuoteRequest,
    Reservation,
    ReserveRequest,
    RestoreRequest,
    Shipment,
    ShipmentRequest,
)

WORKFLOW_NAME = "order_processing"
DEFAULT_PROVIDERS = ("swift", "budget", "parcelly")

T = TypeVar("T")


SHIPPING_RETRY = RetryPolicy(
    first_retry_interval=timedelta(seconds=0.2), max_number_of_attempts=4, backoff_coefficient=2.0
)
INVENTORY_RETRY = RetryPolicy(
    first_retry_interval=timedelta(seconds=0.5),
    max_number_of_attempts=10,
    backoff_coefficient=2.0,
    max_retry_interval=timedelta(seconds=5),
)


@dataclass(frozen=True)
class SagaConfig:
    """How the saga runs: who is asked for quotes, how long they get, how shipping retries."""

    providers: tuple[str, ...] = DEFAULT_PROVIDERS
    quote_timeout: timedelta = timedelta(seconds=1.5)
    shipping_retry: RetryPolicy = SHIPPING_RETRY
    inventory_retry: RetryPolicy = INVENTORY_RETRY


def _as(type_: type[T], value: Any) -> T:
    """An activity called by name returns plain JSON: convert it to the typed result."""
    return msgspec.convert(value, type_)


def _failure_reason(error: BaseException | None) -> str:
    """A short reason for a failed task: the remote error's type and message."""
    if isinstance(error, TaskFailedError):
        details = error.failure_details
        return f"{details.type}: {details.message}"
    return repr(error)


async def compensate(ctx: WorkflowContext, order: Order, config: SagaConfig) -> None:
    """Give the order's stock back (the saga's compensation)."""
    await ctx.call_activity(
        "restore",
        input=RestoreRequest(order_id=ctx.instance_id, sku=order.sku),
        task_queue="inventory",
        retry_policy=config.inventory_retry,
    )


async def collect_quotes(
    ctx: WorkflowContext, order: Order, config: SagaConfig
) -> tuple[list[Quote], dict[str, str]]:
    """Ask every provider at once; keep the quotes that came back in time."""
    request = QuoteRequest(order_id=ctx.instance_id, order=order)
    tasks: dict[str, Task[Any]] = {
        name: ctx.call_activity(
            "get_quote",
            input=request,
            task_queue=f"provider-{name}",
            # The deadline below skips a slow provider; this limit frees its worker.
            start_to_close_timeout=2 * config.quote_timeout,
        )
        for name in config.providers
    }
    # All quotes start together, so one deadline timer is each quote's own timeout.
    deadline = ctx.create_timer(config.quote_timeout)
    pending = list(tasks.values())
    while pending and not deadline.is_complete:
        await when_any([*pending, deadline])
        pending = [task for task in pending if not task.is_complete]
    quotes: list[Quote] = []
    skipped: dict[str, str] = {}
    timed_out = f"timed out after {config.quote_timeout.total_seconds():g}s"
    for name, task in tasks.items():
        if not task.is_complete:
            skipped[name] = timed_out
        elif task.is_failed:
            error = task.get_exception()
            late = isinstance(error, TaskFailedError) and error.error_type == "TimeoutError"
            skipped[name] = timed_out if late else f"failed: {_failure_reason(error)}"
        else:
            quotes.append(_as(Quote, task.get_result()))
    return quotes, skipped


def register_saga(runtime: WorkflowRuntime, config: SagaConfig) -> None:
    """Register the ``order_processing`` workflow on ``runtime``."""

    @runtime.workflow(name=WORKFLOW_NAME)
    async def order_processing(ctx: WorkflowContext, order: Order) -> OrderResult:
        """Reserve stock, collect quotes, ship with the cheapest; compensate on failure."""
        order_id = ctx.instance_id
        ctx.set_custom_status({"stage": "reserving"})
        reservation = _as(
            Reservation,
            await ctx.call_activity(
                "reserve",
                input=ReserveRequest(order_id=order_id, sku=order.sku, quantity=order.quantity),
                task_queue="inventory",
                retry_policy=config.inventory_retry,
            ),
        )
        if not reservation.reserved:
            return OrderResult(order_id, "rejected", reason=reservation.reason)

        ctx.set_custom_status({"stage": "quoting"})
        quotes, skipped = await collect_quotes(ctx, order, config)
        if not quotes:
            await compensate(ctx, order, config)
            return OrderResult(
                order_id,
                "failed",
                skipped_providers=skipped,
                reason="no provider could quote; compensated: stock restored",
            )
        best = min(quotes, key=lambda q: (q.price, q.provider))
        ctx.logger.info("order.provider_chosen", provider=best.provider, price=best.price)

        ctx.set_custom_status({"stage": "shipping", "provider": best.provider})
        try:
            shipment = _as(
                Shipment,
                await ctx.call_activity(
                    "register_shipment",
                    input=ShipmentRequest(order_id, order, best.provider, best.price),
                    task_queue="shipping",
                    retry_policy=config.shipping_retry,
                ),
            )
        except TaskFailedError as error:
            ctx.set_custom_status({"stage": "compensating"})
            await compensate(ctx, order, config)
            return OrderResult(
                order_id,
                "failed",
                best.provider,
                best.price,
                skipped_providers=skipped,
                reason=f"registering the shipment with {best.provider} failed "
                f"({_failure_reason(error)}); compensated: stock restored",
            )
        ctx.set_custom_status({"stage": "done"})
        return OrderResult(
            order_id,
            "shipped",
            best.provider,
            best.price,
            shipment.tracking_id,
            skipped_providers=skipped,
        )


async def main(argv: list[str] | None = None) -> None:
    """Run the orchestrator until SIGTERM."""
    parser = service_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--providers",
        default=",".join(DEFAULT_PROVIDERS),
        help="comma-separated provider names asked for quotes",
    )
    parser.add_argument("--quote-timeout", type=float, default=1.5, help="seconds per quote")
    parser.add_argument(
        "--shipping-attempts", type=int, default=4, help="attempts to register a shipment"
    )
    parser.add_argument(
        "--shipping-retry-interval", type=float, default=0.2, help="seconds before 1st retry"
    )
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    config = SagaConfig(
        providers=tuple(p.strip() for p in args.providers.split(",") if p.strip()),
        quote_timeout=timedelta(seconds=args.quote_timeout),
        shipping_retry=RetryPolicy(
            first_retry_interval=timedelta(seconds=args.shipping_retry_interval),
            max_number_of_attempts=args.shipping_attempts,
            backoff_coefficient=2.0,
        ),
    )
    runtime = new_runtime(args)
    register_saga(runtime, config)
    await serve(runtime, "orchestrator")


if __name__ == "__main__":
    run_service(main())
