"""Guarded appends of history (brokers/_commit.py) written as one atomic batch, against a real
nats-server: a task too large for one message, a client's start due later, and their
conflicts."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import nats.errors
import nats.js.errors
import pytest

from brokers import AppendConflictError, DispatchMessage, JetStreamBroker, schedule_headers


async def _history_seqs(broker: JetStreamBroker, instance_id: str) -> list[int]:
    return [e.seq for e in await broker.load_history(instance_id)]


async def _stored(broker: JetStreamBroker, subject: str) -> bytes | None:
    """The last message on ``subject`` in the history stream; None if there is none."""
    try:
        msg = await broker.js.get_last_msg(broker.subjects.history_stream, subject)
    except nats.js.errors.NotFoundError:
        return None
    return msg.data


def _timer(broker: JetStreamBroker, instance_id: str, body: bytes) -> DispatchMessage:
    """The schedule message of a start due in an hour, as a client writes it."""
    s = broker.subjects
    fire_at = datetime.now(UTC) + timedelta(hours=1)
    target = s.outbox_workflow(instance_id)
    return DispatchMessage(s.timer(instance_id, "start"), body, schedule_headers(fire_at, target))


class TestAppendBatch:
    async def test_events_and_dispatches_are_stored_and_the_last_event_is_returned(
        self, broker: JetStreamBroker
    ) -> None:
        """Events and dispatches are stored together, and the caller gets the stream sequence
        of its last history event, not of the dispatch written after it."""
        dispatch = broker.subjects.outbox_activity("default")
        seq = await broker.append(
            "ab-1", 0, [b'{"n":0}', b'{"n":1}', b'{"n":2}'],
            [DispatchMessage(dispatch, b'{"task":1}', {"Nats-Msg-Id": "ab-1:task"})],
        )
        stored = await _history_seqs(broker, "ab-1")
        assert [seq - 2, seq - 1, seq] == stored
        assert b'{"task":1}' == await _stored(broker, dispatch)

    async def test_a_stale_expected_sequence_is_a_conflict_and_stores_nothing(
        self, broker: JetStreamBroker
    ) -> None:
        """A batch expecting a sequence the history moved past is refused whole: neither its
        events nor its dispatches are stored."""
        first = await broker.append("ab-stale", 0, [b'{"n":0}'])
        await broker.append("ab-stale", first, [b'{"n":1}'])
        dispatch = broker.subjects.outbox_activity("stale-queue")
        with pytest.raises(AppendConflictError):
            await broker.append(
                "ab-stale", first, [b'{"n":"stale"}'],
                [DispatchMessage(dispatch, b"{}", {"Nats-Msg-Id": "ab-stale:task"})],
            )
        assert 2 == len(await _history_seqs(broker, "ab-stale"))
        assert None is await _stored(broker, dispatch)

    async def test_two_appends_of_one_instance_one_wins(self, broker: JetStreamBroker) -> None:
        """Two appends of the same instance expecting the same sequence: exactly one wins."""
        racing = [broker.append("ab-race", 0, [b'{"writer":1}', b"{}"]),
                  broker.append("ab-race", 0, [b'{"writer":2}', b"{}"])]
        results = await asyncio.gather(*racing, return_exceptions=True)
        assert 1 == sum(isinstance(r, AppendConflictError) for r in results)
        assert 2 == len(await _history_seqs(broker, "ab-race"))

    async def test_a_duplicate_message_id_is_a_conflict(self, broker: JetStreamBroker) -> None:
        """A dispatch whose message id is already stored (10201) fails the append as a
        conflict, so the caller reads the history again; the batch's events are not stored."""
        dispatch = broker.subjects.outbox_activity("default")
        seq = await broker.append(
            "ab-dup", 0, [b"{}"], [DispatchMessage(dispatch, b"{}", {"Nats-Msg-Id": "dup:1"})]
        )
        with pytest.raises(AppendConflictError):
            await broker.append(
                "ab-dup", seq, [b"{}"],
                [DispatchMessage(dispatch, b"{}", {"Nats-Msg-Id": "dup:1"})],
            )
        assert [seq] == await _history_seqs(broker, "ab-dup")

    async def test_an_oversized_message_fails_the_append_and_stores_nothing(
        self, broker: JetStreamBroker
    ) -> None:
        """A message over the server's max payload fails the append with nothing stored; the
        instance's next append, expecting the same empty history, goes through at once."""
        too_big = b"x" * (broker.nc.max_payload + 1)
        with pytest.raises(nats.errors.MaxPayloadError):
            await broker.append("ab-big", 0, [b"{}", too_big])
        assert [] == await _history_seqs(broker, "ab-big")
        seq = await asyncio.wait_for(broker.append("ab-big", 0, [b"{}", b"{}"]), 5)
        assert [seq - 1, seq] == await _history_seqs(broker, "ab-big")

    async def test_more_messages_than_a_batch_takes_are_refused(
        self, broker: JetStreamBroker
    ) -> None:
        """An append of more messages than one atomic batch takes is refused up front, saying
        to split the fan-out; nothing is stored."""
        with pytest.raises(ValueError, match="split the fan-out"):
            await broker.append("ab-many", 0, [b"{}"] * 1001)
        assert [] == await _history_seqs(broker, "ab-many")


class TestOversizedTask:
    async def test_a_task_of_several_messages_is_written_as_one_batch(
        self, broker: JetStreamBroker
    ) -> None:
        """A task too large for one message (several task commits, 5 MB in all) is stored
        whole, and the caller gets the sequence of its last message."""
        big = [b"x" * 200_000 for _ in range(25)]
        seq = await broker.commit("ot-huge", 0, big)
        stored = await _history_seqs(broker, "ot-huge")
        assert (25, seq) == (len(stored), stored[-1])

    async def test_a_stale_task_of_several_messages_stores_none_of_them(
        self, broker: JetStreamBroker
    ) -> None:
        """A multi-message task that lost a race to another writer is refused whole."""
        first = await broker.commit("ot-stale", 0, [b'{"n":0}'])
        await broker.commit("ot-stale", first, [b'{"n":1}'])
        with pytest.raises(AppendConflictError):
            await broker.commit("ot-stale", first, [b'{"part":1}', b'{"part":2}'])
        assert 2 == len(await _history_seqs(broker, "ot-stale"))


class TestScheduledStart:
    async def test_a_start_and_its_timer_are_stored_together(
        self, broker: JetStreamBroker
    ) -> None:
        """A start due later stores its history event and its timer schedule in one batch."""
        seq = await broker.append("ss-1", 0, [b'{"start":1}'], [_timer(broker, "ss-1", b"go")])
        assert [seq] == await _history_seqs(broker, "ss-1")
        assert b"go" == await _stored(broker, broker.subjects.timer("ss-1", "start"))

    async def test_a_start_that_lost_the_race_leaves_no_timer(
        self, broker: JetStreamBroker
    ) -> None:
        """A start refused because the instance's history moved sets no timer either, so no
        first task of a run that was never written is ever asked for."""
        await broker.append("ss-race", 0, [b'{"start":"winner"}'])
        with pytest.raises(AppendConflictError):
            await broker.append(
                "ss-race", 0, [b'{"start":"loser"}'], [_timer(broker, "ss-race", b"go")]
            )
        assert 1 == len(await _history_seqs(broker, "ss-race"))
        assert None is await _stored(broker, broker.subjects.timer("ss-race", "start"))
