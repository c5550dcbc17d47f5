"""RecordChanges: what one subscription to an instance record hands on, without a server."""

from __future__ import annotations

import asyncio

import pytest

from brokers import RecordChanges, RecordEntry, WatchClosedError


def entry(revision: int, value: bytes | None = b"x") -> RecordEntry:
    """The record of instance "i" at ``revision``."""
    return RecordEntry("i", value, revision)


def queued(changes: RecordChanges) -> list[int]:
    """The revisions ``next`` would hand on now, oldest first."""
    revisions = []
    while not changes._queue.empty():
        item = changes._queue.get_nowait()
        assert isinstance(item, RecordEntry)
        revisions.append(item.revision)
    return revisions


class TestRecordChanges:
    def test_changes_before_the_read_are_held_and_only_newer_ones_handed_on(self) -> None:
        """Changes that arrive before the current value is read wait for it; those not newer
        than the read are dropped, the newer ones follow in order."""
        changes = RecordChanges("i", None)
        for revision in (3, 5, 7):
            changes._offer(entry(revision))
        changes._begin(entry(5, b"current"))
        assert (entry(5, b"current"), [7]) == (changes.current, queued(changes))

    def test_a_change_arriving_twice_or_late_is_dropped(self) -> None:
        """A revision already seen (a replaced consumer, a read again) or older is dropped."""
        changes = RecordChanges("i", None)
        changes._begin(entry(1))
        for revision in (2, 2, 4, 3, 4, 6):
            changes._offer(entry(revision))
        assert [2, 4, 6] == queued(changes)

    def test_accept_filters_values_but_never_deletions(self) -> None:
        """Only values ``accept`` takes are handed on; a deletion always is."""
        changes = RecordChanges("i", lambda value: value == b"done")
        changes._begin(entry(0, None))
        changes._offer(entry(1, b"running"))
        changes._offer(entry(2, None))
        changes._offer(entry(3, b"done"))
        assert (None, [2, 3]) == (changes.current, queued(changes))

    def test_a_value_accept_cannot_judge_is_handed_on(self) -> None:
        """A value that makes ``accept`` raise is handed on, for the subscriber to report."""

        def accept(value: bytes) -> bool:
            raise ValueError("not a record")

        changes = RecordChanges("i", accept)
        changes._begin(entry(0, None))
        changes._offer(entry(1, b"garbage"))
        assert [1] == queued(changes)

    async def test_a_failure_is_raised_by_every_later_next(self) -> None:
        """Once the watch stops, ``next`` raises its error, every time."""
        changes = RecordChanges("i", None)
        changes._begin(entry(0, None))
        changes._fail(WatchClosedError("closed"))
        for _ in range(2):
            with pytest.raises(WatchClosedError):
                await asyncio.wait_for(changes.next(), 1)
