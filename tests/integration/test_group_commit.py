"""Group commit of history appends, against a real nats-server."""

from __future__ import annotations

import asyncio

import nats.errors

from brokers import AppendConflictError, DispatchMessage, JetStreamBroker


async def _history_seqs(broker: JetStreamBroker, instance_id: str) -> list[int]:
    return [e.seq for e in await broker.load_history(instance_id)]


class TestGroupCommit:
    async def test_concurrent_appends_each_get_their_own_last_sequence(self, broker):
        """Many instances appending at once are all stored, and each caller gets the stream
        sequence of its own last history event."""
        ids = [f"gc-{i}" for i in range(300)]
        dispatch = broker.subjects.outbox_activity("default")
        results = await asyncio.gather(*[
            broker.append(
                iid, 0, [f'{{"n":{n}}}'.encode() for n in range(1 + i % 3)],
                [DispatchMessage(dispatch, b"{}", {"Nats-Msg-Id": f"{iid}:task"})],
            )
            for i, iid in enumerate(ids)
        ])
        stored = await asyncio.gather(*[_history_seqs(broker, iid) for iid in ids])
        assert [seqs[-1] for seqs in stored] == results
        assert [1 + i % 3 for i in range(len(ids))] == [len(seqs) for seqs in stored]

    async def test_a_conflict_fails_only_the_loser(self, broker):
        """When one instance's expected sequence is stale, only that append fails; the others
        written alongside it are stored."""
        first = await broker.append("gc-loser", 0, [b'{"n":0}'])
        await broker.append("gc-loser", first, [b'{"n":1}'])
        ids = [f"gc-ok-{i}" for i in range(50)]
        appends = [broker.append(iid, 0, [b'{"n":0}', b'{"n":1}']) for iid in ids]
        appends.insert(25, broker.append("gc-loser", first, [b'{"n":"stale"}']))
        results = await asyncio.gather(*appends, return_exceptions=True)
        loser = results.pop(25)
        assert isinstance(loser, AppendConflictError)
        stored = await asyncio.gather(*[_history_seqs(broker, iid) for iid in ids])
        assert [seqs[-1] for seqs in stored] == results
        assert 2 == len(await _history_seqs(broker, "gc-loser"))

    async def test_two_appends_of_one_instance_never_share_a_batch(self, broker):
        """Two appends of the same instance expecting the same sequence: exactly one wins,
        whatever else is being written."""
        others = [broker.append(f"gc-other-{i}", 0, [b"{}"]) for i in range(20)]
        racing = [broker.append("gc-race", 0, [b'{"writer":1}']),
                  broker.append("gc-race", 0, [b'{"writer":2}'])]
        results = await asyncio.gather(*racing, *others, return_exceptions=True)
        conflicts = [r for r in results[:2] if isinstance(r, AppendConflictError)]
        assert 1 == len(conflicts)
        assert not any(isinstance(r, BaseException) for r in results[2:])
        assert 1 == len(await _history_seqs(broker, "gc-race"))

    async def test_a_duplicate_message_id_fails_only_its_append(self, broker):
        """A dispatch whose message id is already stored fails only the append carrying it."""
        dispatch = broker.subjects.outbox_activity("default")
        seq = await broker.append(
            "gc-dup", 0, [b"{}"], [DispatchMessage(dispatch, b"{}", {"Nats-Msg-Id": "dup:1"})]
        )
        appends = [broker.append(f"gc-fresh-{i}", 0, [b"{}"]) for i in range(30)]
        appends.insert(10, broker.append(
            "gc-dup", 0, [b"{}"], [DispatchMessage(dispatch, b"{}", {"Nats-Msg-Id": "dup:1"})]
        ))
        results = await asyncio.gather(*appends, return_exceptions=True)
        assert isinstance(results.pop(10), AppendConflictError)
        assert not any(isinstance(r, BaseException) for r in results)
        assert [seq] == await _history_seqs(broker, "gc-dup")

    async def test_an_oversized_append_fails_alone(self, broker):
        """A message over the server's max payload fails its own append only."""
        too_big = b"x" * (broker.nc.max_payload + 1)
        appends = [broker.append(f"gc-small-{i}", 0, [b"{}"]) for i in range(20)]
        appends.insert(5, broker.append("gc-big", 0, [b"{}", too_big]))
        results = await asyncio.gather(*appends, return_exceptions=True)
        assert isinstance(results.pop(5), nats.errors.MaxPayloadError)
        assert not any(isinstance(r, BaseException) for r in results)

    async def test_an_append_over_the_batch_size_limit_is_written_alone(self, broker):
        """An append bigger than a shared batch may be is still written, in a batch of its
        own, and appends queued behind it are written too."""
        big = [b"x" * 200_000 for _ in range(25)]  # 5 MB: over the 4 MB a shared batch takes
        appends = [broker.append("gc-huge", 0, big)]
        appends += [broker.append(f"gc-after-{i}", 0, [b"{}"]) for i in range(10)]
        results = await asyncio.gather(*appends)
        assert 25 == len(await _history_seqs(broker, "gc-huge"))
        assert [results[0]] == [(await _history_seqs(broker, "gc-huge"))[-1]]
