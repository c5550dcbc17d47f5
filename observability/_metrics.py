"""Metrics: jetloom's instruments, and the backlog gauges fed by polling the consumers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from observability._setup import metrics_enabled

_meter = metrics.get_meter("jetloom")


class Delivery(Protocol):
    """What the instrumentation reads of a delivered work message."""

    @property
    def subject(self) -> str: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def num_delivered(self) -> int: ...



_backlog: dict[tuple[str, str], tuple[int, int, int]] = {}
"""(stream, consumer) -> (num_pending, num_redelivered, num_ack_pending), as last polled."""


def _observe(index: int) -> Callable[[CallbackOptions], list[Observation]]:
    def observe(_: CallbackOptions) -> list[Observation]:
        return [
            Observation(values[index], {"messaging.destination.name": stream,
                                        "messaging.consumer.group.name": consumer})
            for (stream, consumer), values in list(_backlog.items())
        ]

    return observe


class _Metrics:
    """The instruments (proxies until a meter provider is installed)."""

    def __init__(self) -> None:
        m = _meter
        self.workflows_started = m.create_counter(
            "jetloom.workflow.started", unit="{workflow}", description="Workflow runs started"
        )
        self.workflows_completed = m.create_counter(
            "jetloom.workflow.completed",
            unit="{workflow}",
            description="Workflow runs ended, by jetloom.workflow.status",
        )
        self.workflows_failed = m.create_counter(
            "jetloom.workflow.failed", unit="{workflow}", description="Workflow runs that failed"
        )
        self.workflow_duration = m.create_histogram(
            "jetloom.workflow.duration", unit="s", description="Start to end of a workflow run"
        )
        self.task_duration = m.create_histogram(
            "jetloom.workflow_task.duration",
            unit="s",
            description="One workflow task: replay, append, projection",
        )
        self.history_length = m.create_histogram(
            "jetloom.workflow_task.history_length",
            unit="{event}",
            description="History events of the run when a workflow task starts",
        )
        self.activity_duration = m.create_histogram(
            "jetloom.activity.duration", unit="s", description="One activity attempt"
        )
        self.activity_failures = m.create_counter(
            "jetloom.activity.failures", unit="{attempt}", description="Failed activity attempts"
        )
        self.redelivered = m.create_counter(
            "jetloom.messages.redelivered",
            unit="{message}",
            description="Work messages received more than once (num_delivered > 1)",
        )
        for index, (name, what) in enumerate(
            [
                ("jetloom.consumer.pending", "Messages not yet delivered (num_pending)"),
                ("jetloom.consumer.redelivered", "Messages being redelivered (num_redelivered)"),
                ("jetloom.consumer.ack_pending", "Delivered, not yet acknowledged"),
            ]
        ):
            m.create_observable_gauge(
                name, callbacks=[_observe(index)], unit="{message}", description=what
            )


metrics_instruments = _Metrics()
"""jetloom's instruments."""

CONSUMER_POLL_INTERVAL = 10.0
"""Seconds between two reads of the consumers' info for the backlog gauges."""


async def watch_consumers(
    consumer_info: Callable[[str], Awaitable[Any]], stream: str, consumers: Sequence[str]
) -> None:
    """Poll ``consumer_info(name)`` for the backlog gauges until cancelled (if metrics are on).

    Args:
        consumer_info: returns a consumer's info (``num_pending``, ``num_redelivered``...).
        stream: the stream the consumers read.
        consumers: the durable consumers to watch.
    """
    if not metrics_enabled():
        return
    try:
        while True:
            for name in consumers:
                with contextlib.suppress(Exception):
                    info = await consumer_info(name)
                    _backlog[(stream, name)] = (
                        int(info.num_pending or 0),
                        int(info.num_redelivered or 0),
                        int(info.num_ack_pending or 0),
                    )
            # nats-py's request may drop a cancellation on Python 3.11 (asyncio.wait_for):
            # stop here rather than poll forever.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise asyncio.CancelledError
            await asyncio.sleep(CONSUMER_POLL_INTERVAL)
    finally:
        for name in consumers:
            _backlog.pop((stream, name), None)


def count_redeliveries(msgs: Sequence[Delivery], consumer: str) -> None:
    """Count the work messages of a task that were delivered before."""
    for msg in msgs:
        if msg.num_delivered > 1:
            metrics_instruments.redelivered.add(1, {"messaging.consumer.group.name": consumer})
