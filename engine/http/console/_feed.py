"""One reader of the instances bucket per server process, fanned out to every browser.

``InstanceFeed.run`` follows ``JetStreamBroker.read_records`` (every current record, then every
change) into an ``InstanceIndex`` and bumps a version on each change; the browsers' event
streams wait on that version instead of each watching the bucket themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

import msgspec
import structlog

from brokers import JetStreamBroker
from engine import WorkflowStatus
from engine.core.state import InstanceRecord, decode_record
from engine.http.console._index import InstanceIndex, InstanceSummary

_log = structlog.get_logger("jetloom.console")

RESTART_DELAY = 1.0
"""Seconds before a reader that gave up (NATS gone for long) is started again."""


def summary_of(record: InstanceRecord) -> InstanceSummary:
    """The list's view of an instance record."""
    return InstanceSummary(
        instance_id=record.instance_id,
        name=record.name,
        status=WorkflowStatus(record.status),
        created_at=record.created_at,
        last_updated_at=record.last_updated_at,
        parent_instance_id=record.parent_instance_id,
    )


class InstanceFeed:
    """The index of all instances, kept current, and a version that changes with it."""

    def __init__(self, broker: JetStreamBroker) -> None:
        self._broker = broker
        self.index = InstanceIndex()
        self.version = 0
        """Bumped on every change once the current records are loaded (and when they are)."""
        self.ready = False
        """True once every current record is in the index."""
        self.last_change_at: datetime | None = None
        """When the feed last saw an instance change (wall clock of this process)."""
        self.error: str | None = None
        """Why the reader is failing right now, if it is."""
        self._changed = asyncio.Event()
        self.closing = asyncio.Event()
        """Set when the server shuts down: event streams end."""

    def _bump(self) -> None:
        self.version += 1
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for_change(self, seen_version: int, timeout: float) -> bool:
        """Wait until the version differs from ``seen_version`` (True) or ``timeout`` passes
        or the server shuts down (False)."""
        if self.version != seen_version:
            return True
        changed = asyncio.ensure_future(self._changed.wait())
        closing = asyncio.ensure_future(self.closing.wait())
        try:
            await asyncio.wait({changed, closing}, timeout=timeout,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            changed.cancel()
            closing.cancel()
        return self.version != seen_version

    async def run(self) -> None:
        """Follow the bucket until cancelled; a reader that gives up is started again."""
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.error = f"{type(exc).__name__}: {exc}"
                _log.warning("console.feed_failed", error=self.error)
                self._bump()
                await asyncio.sleep(RESTART_DELAY)

    async def _follow(self) -> None:
        # A reader started over delivers every current record again: build a fresh index and
        # keep showing the old one until the new one is complete (purges in between vanish).
        loading = InstanceIndex()
        caught_up = False
        records = self._broker.read_records()
        try:
            async for entry in records:
                if entry is None:
                    caught_up = True
                    self.index, self.ready, self.error = loading, True, None
                    self._bump()
                    continue
                target = self.index if caught_up else loading
                if entry.value is None:
                    target.remove(entry.key)
                else:
                    try:
                        target.put(summary_of(decode_record(entry.value)))
                    except (msgspec.DecodeError, ValueError) as exc:
                        _log.warning("console.bad_record", key=entry.key, error=str(exc))
                        continue
                if caught_up:
                    self.last_change_at = datetime.now(UTC)
                    self._bump()
        finally:
            with contextlib.suppress(Exception):
                await records.aclose()
