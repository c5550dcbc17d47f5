"""The console's in-memory index of instances: one summary per instance, kept in creation
order, counted by status and workflow, and paged on the server.

Pure: fed by ``InstanceFeed`` (the instances bucket), read by the list endpoint. 100,000
instances take some tens of megabytes and a page is one pass over them at most, so the browser
only ever receives the page it shows.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from engine import WorkflowStatus

MAX_PAGE_SIZE = 500
"""The most instances one page may ask for."""


@dataclass(frozen=True, slots=True)
class InstanceSummary:
    """What the list shows of one instance (no payloads)."""

    instance_id: str
    name: str
    status: WorkflowStatus
    created_at: datetime
    last_updated_at: datetime
    parent_instance_id: str = ""

    @property
    def order_key(self) -> tuple[float, str]:
        """Where the instance sits in creation order."""
        return (self.created_at.timestamp(), self.instance_id)

    def as_json(self) -> dict[str, Any]:
        """The summary as the list endpoint sends it."""
        return {
            "instance_id": self.instance_id,
            "name": self.name,
            "status": self.status.value,
            "created_at": _iso(self.created_at),
            "last_updated_at": _iso(self.last_updated_at),
            "parent_instance_id": self.parent_instance_id or None,
        }


def _iso(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class PageQuery:
    """Which instances a page shows: filters, then a slice of the matches."""

    statuses: frozenset[WorkflowStatus] = frozenset()
    """Only these statuses (empty: all)."""
    workflow: str = ""
    """Only this workflow name (empty: all)."""
    search: str = ""
    """Only ids containing this text, ignoring case (empty: all)."""
    offset: int = 0
    limit: int = 50
    newest_first: bool = True

    def matches(self, summary: InstanceSummary) -> bool:
        """True if ``summary`` passes the filters."""
        return (
            (not self.statuses or summary.status in self.statuses)
            and (not self.workflow or summary.name == self.workflow)
            and (not self.search or self.search.lower() in summary.instance_id.lower())
        )


@dataclass(frozen=True)
class Page:
    """One page of matches and how many matched in all."""

    items: list[InstanceSummary]
    total: int
    offset: int
    limit: int


@dataclass
class InstanceIndex:
    """Every known instance's summary, in creation order, with counts by status and name."""

    _by_id: dict[str, InstanceSummary] = field(default_factory=dict)
    _order: list[tuple[float, str]] = field(default_factory=list)
    _by_status: Counter[WorkflowStatus] = field(default_factory=Counter)
    _by_name: Counter[str] = field(default_factory=Counter)
    latest_update: datetime | None = None
    """The latest ``last_updated_at`` put so far."""

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, instance_id: str) -> InstanceSummary | None:
        """The summary of an instance, or None."""
        return self._by_id.get(instance_id)

    def put(self, summary: InstanceSummary) -> None:
        """Add an instance or replace its summary (a new run may change its creation time)."""
        self.remove(summary.instance_id)
        self._by_id[summary.instance_id] = summary
        bisect.insort(self._order, summary.order_key)
        self._by_status[summary.status] += 1
        self._by_name[summary.name] += 1
        if self.latest_update is None or summary.last_updated_at > self.latest_update:
            self.latest_update = summary.last_updated_at

    def remove(self, instance_id: str) -> None:
        """Forget an instance (purged); nothing happens if it is unknown."""
        old = self._by_id.pop(instance_id, None)
        if old is None:
            return
        key = old.order_key
        del self._order[bisect.bisect_left(self._order, key)]
        self._by_status[old.status] -= 1
        self._by_name[old.name] -= 1
        if not self._by_name[old.name]:
            del self._by_name[old.name]

    def counts(self) -> dict[str, int]:
        """Instances per status, every status listed."""
        return {status.value: self._by_status[status] for status in WorkflowStatus}

    def workflow_names(self) -> dict[str, int]:
        """Instances per workflow name, by name."""
        return dict(sorted(self._by_name.items()))

    def _in_order(self, newest_first: bool) -> Iterator[InstanceSummary]:
        keys = reversed(self._order) if newest_first else iter(self._order)
        return (self._by_id[instance_id] for _, instance_id in keys)

    def _slice(self, offset: int, limit: int, newest_first: bool) -> list[tuple[float, str]]:
        if not newest_first:
            return self._order[offset : offset + limit]
        end = max(0, len(self._order) - offset)
        return self._order[max(0, end - limit) : end][::-1]

    def page(self, query: PageQuery) -> Page:
        """The matches of ``query`` from ``offset``, at most ``limit`` of them."""
        limit = max(1, min(query.limit, MAX_PAGE_SIZE))
        offset = max(0, query.offset)
        if not (query.statuses or query.workflow or query.search):
            keys = self._slice(offset, limit, query.newest_first)
            items = [self._by_id[instance_id] for _, instance_id in keys]
            return Page(items, len(self._by_id), offset, limit)
        ordered = self._in_order(query.newest_first)
        items = []
        total = 0
        for summary in ordered:
            if query.matches(summary):
                if offset <= total < offset + limit:
                    items.append(summary)
                total += 1
        return Page(items, total, offset, limit)
