"""``jetloom stats``: instance counts by status and workflow, the backlog of each work consumer,
and the storage each stream of the prefix uses."""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import dataclass
from typing import Any

from rich.text import Text

from brokers import ConsumerStats, StreamStats, consumer_stats, storage_stats, stream_stats
from engine import WorkflowStatus
from engine.cli.connecting import Session, session
from engine.cli.output import Output, plain_table, rich_table, status_text

_CONSUMER_HEADERS = ["consumer", "task queue", "pending", "in flight", "redelivered", "waiting"]
_STORAGE_HEADERS = ["stream", "messages", "size"]
_NO_CONSUMERS = "no consumers yet (no runtime has started on this prefix)"


def _consumer_as_json(stats: ConsumerStats, activities_prefix: str) -> dict[str, Any]:
    name = stats.name
    kind = "activities" if name.startswith(activities_prefix) else "workflows"
    return {
        "consumer": name,
        "kind": kind,
        "task_queue": name[len(activities_prefix) :] if kind == "activities" else None,
        "pending": stats.pending,
        "in_flight": stats.in_flight,
        "redelivered": stats.redelivered,
        "waiting_pulls": stats.waiting_pulls,
        "delivered": stats.delivered,
    }


def _stream_as_json(stats: StreamStats) -> dict[str, Any]:
    return {"stream": stats.name, "messages": stats.messages}


def size_text(size: int) -> str:
    """Bytes for people: ``512 B``, ``1.5 KiB``, ``12.0 MiB``."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class _Stats:
    """What ``stats`` reports."""

    by_status: Counter[WorkflowStatus]
    by_workflow: dict[str, Counter[WorkflowStatus]]
    consumers: list[dict[str, Any]]
    """Workflow consumers first, then activity consumers, by name (``_consumer_as_json``)."""
    work: StreamStats
    deadletter: StreamStats
    storage: list[StreamStats]
    """Every stream of the prefix (buckets included) with what it stores."""

    @property
    def total(self) -> int:
        return sum(self.by_status.values())

    def as_json(self) -> dict[str, Any]:
        return {
            "instances": {
                "total": self.total,
                "by_status": {s.value: self.by_status[s] for s in WorkflowStatus},
                "by_workflow": {
                    name: {s.value: n for s, n in sorted(c.items(), key=lambda i: i[0].value)}
                    for name, c in sorted(self.by_workflow.items())
                },
            },
            "consumers": self.consumers,
            "streams": {
                "work": _stream_as_json(self.work),
                "deadletter": _stream_as_json(self.deadletter),
            },
            "storage": [
                {"stream": s.name, "messages": s.messages, "bytes": s.bytes}
                for s in self.storage
            ],
        }

    def consumer_rows(self) -> list[list[str]]:
        return [
            [
                str(c["consumer"]),
                str(c["task_queue"] or "-"),
                str(c["pending"]),
                str(c["in_flight"]),
                str(c["redelivered"]),
                str(c["waiting_pulls"]),
            ]
            for c in self.consumers
        ]

    def storage_rows(self) -> list[list[str]]:
        rows = [[s.name, str(s.messages), size_text(s.bytes)] for s in self.storage]
        total = sum(s.bytes for s in self.storage)
        return [*rows, ["total", str(sum(s.messages for s in self.storage)), size_text(total)]]

    def streams_line(self) -> str:
        return (
            f"work stream {self.work.name}: {self.work.messages} messages; "
            f"dead letters {self.deadletter.name}: {self.deadletter.messages}"
        )


async def _collect(opened: Session) -> _Stats:
    by_status: Counter[WorkflowStatus] = Counter()
    by_workflow: dict[str, Counter[WorkflowStatus]] = {}
    async for state in opened.client.list_workflows():
        by_status[state.runtime_status] += 1
        by_workflow.setdefault(state.name, Counter())[state.runtime_status] += 1
    subjects = opened.broker.subjects
    consumers = await consumer_stats(opened.broker, subjects.work_stream)
    work = await stream_stats(opened.broker, subjects.work_stream)
    deadletter = await stream_stats(opened.broker, subjects.deadletter_stream)
    storage = await storage_stats(opened.broker)
    activities_prefix = subjects.activities_consumer("")
    return _Stats(
        by_status,
        by_workflow,
        sorted(
            (_consumer_as_json(c, activities_prefix) for c in consumers),
            key=lambda c: (c["kind"] != "workflows", c["consumer"]),
        ),
        work,
        deadletter,
        storage,
    )


def _show_rich(out: Output, stats: _Stats) -> None:
    out.show(
        rich_table(
            ["status", "count"],
            [[status_text(s), str(stats.by_status[s])] for s in WorkflowStatus],
            title=f"instances: {stats.total}",
        )
    )
    if stats.consumers:
        out.show(rich_table(_CONSUMER_HEADERS, stats.consumer_rows(), title="consumers"))
    else:
        out.show(Text(_NO_CONSUMERS, "dim"))
    out.show(rich_table(_STORAGE_HEADERS, stats.storage_rows(), title="storage"))
    out.show(Text(stats.streams_line(), style="dim"))


def _show_plain(out: Output, stats: _Stats) -> None:
    out.plain(f"instances: {stats.total}")
    status_rows = [[s.value, str(stats.by_status[s])] for s in WorkflowStatus]
    out.plain(plain_table(["status", "count"], status_rows))
    out.plain()
    if stats.consumers:
        out.plain(plain_table(_CONSUMER_HEADERS, stats.consumer_rows()))
    else:
        out.plain(_NO_CONSUMERS)
    out.plain()
    out.plain(plain_table(_STORAGE_HEADERS, stats.storage_rows()))
    out.plain()
    out.plain(stats.streams_line())


async def cmd_stats(args: argparse.Namespace) -> int:
    out = Output(args)
    async with session(args) as opened:
        stats = await _collect(opened)
    if args.json:
        out.json(stats.as_json())
    elif out.rich:
        _show_rich(out, stats)
    else:
        _show_plain(out, stats)
    return 0
