"""What the health page shows: backlog and redeliveries per work consumer (as ``jetloom stats``
reports them), the latest dead-lettered messages with their reasons, and the workers whose
heartbeat is recent."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from typing import Any

import msgspec

from brokers import ConsumerStats, JetStreamBroker, consumer_stats, read_workers

DEAD_LETTERS_SHOWN = 50
"""The latest dead letters the page lists."""
_PREVIEW_BYTES = 300


def _consumer_row(stats: ConsumerStats, activities_prefix: str) -> dict[str, Any]:
    name = stats.name
    is_activities = name.startswith(activities_prefix)
    return {
        "consumer": name,
        "kind": "activities" if is_activities else "workflows",
        "task_queue": name[len(activities_prefix):] if is_activities else None,
        "pending": stats.pending,
        "in_flight": stats.in_flight,
        "redelivered": stats.redelivered,
        "waiting_pulls": stats.waiting_pulls,
    }


async def work_consumers(broker: JetStreamBroker) -> list[dict[str, Any]]:
    """Backlog (pending), in flight, redeliveries and waiting pulls of each work consumer."""
    subjects = broker.subjects
    prefix = subjects.activities_consumer("")
    rows = [_consumer_row(s, prefix) for s in await consumer_stats(broker, subjects.work_stream)]
    return sorted(rows, key=lambda r: (r["kind"] != "workflows", r["consumer"]))


async def dead_letters(broker: JetStreamBroker, limit: int = DEAD_LETTERS_SHOWN) -> dict[str, Any]:
    """How many messages the dead-letter stream holds and the latest ``limit`` of them, newest
    first, each with its reason (header ``Jetloom-Reason``) and the start of its body."""
    stream = broker.subjects.deadletter_stream
    info = await broker.js.stream_info(stream)
    total = int(info.state.messages or 0)
    if total == 0:
        return {"stream": stream, "total": 0, "messages": []}
    first = max(int(info.state.first_seq or 1), int(info.state.last_seq or 1) - limit + 1)
    created = await broker.api(f"CONSUMER.CREATE.{stream}", {
        "stream_name": stream,
        "config": {
            "deliver_policy": "by_start_sequence",
            "opt_start_seq": first,
            "ack_policy": "none",
            "inactive_threshold": 5_000_000_000,
            "mem_storage": True,
        },
    })
    wanted = min(limit, int(created.get("num_pending", 0)))
    sub = await broker.js.pull_subscribe_bind(durable=None, stream=stream, name=created["name"])
    messages: list[dict[str, Any]] = []
    try:
        while len(messages) < wanted:
            for msg in await sub.fetch(wanted - len(messages), timeout=2):
                headers = msg.headers or {}
                messages.append({
                    "seq": msg.metadata.sequence.stream,
                    "time": msg.metadata.timestamp.astimezone(UTC).isoformat().replace(
                        "+00:00", "Z"),
                    "subject": msg.subject,
                    "original_subject": headers.get("Jetloom-Original-Subject", ""),
                    "reason": headers.get("Jetloom-Reason", ""),
                    "size": int(headers.get("Jetloom-Truncated-From", len(msg.data))),
                    "preview": msg.data[:_PREVIEW_BYTES].decode("utf-8", "replace"),
                })
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
        with contextlib.suppress(Exception):
            await broker.api(f"CONSUMER.DELETE.{stream}.{created['name']}", None)
    messages.sort(key=lambda m: -int(m["seq"]))
    return {"stream": stream, "total": total, "messages": messages}


async def health_report(broker: JetStreamBroker) -> dict[str, Any]:
    """Everything the health page shows, read at once."""
    subjects = broker.subjects
    consumers, work, letters, workers = await asyncio.gather(
        work_consumers(broker),
        broker.js.stream_info(subjects.work_stream),
        dead_letters(broker),
        read_workers(broker),
    )
    return {
        "checked_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "work_stream": {"stream": subjects.work_stream, "messages": work.state.messages},
        "consumers": consumers,
        "dead_letters": letters,
        "workers": msgspec.to_builtins(workers),
    }
