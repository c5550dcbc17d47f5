"""Guarded appends (brokers/_commit.py) against a scripted connection: which refusals are
asked again, which are raised, and what an atomic batch puts on the wire (no server)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from types import SimpleNamespace

import nats.errors
import pytest

from brokers import _commit
from brokers._commit import append_batch, publish_expecting
from brokers._errors import AppendConflictError, JetStreamError, UnavailableError
from brokers._subjects import DispatchMessage

Answer = bytes | Exception


def ack(seq: int) -> bytes:
    """A publish ack storing at ``seq``."""
    return json.dumps({"stream": "S", "seq": seq}).encode()


def refusal(code: int, err_code: int) -> bytes:
    """A publish ack refusing the write."""
    return json.dumps({"error": {"code": code, "err_code": err_code, "description": "no"}}).encode()


@dataclass
class ScriptedConnection:
    """Answers each request with the next scripted answer; records what was sent."""

    answers: list[Answer]
    max_payload: int = 1024
    requests: list[tuple[str, bytes, dict[str, str]]] = field(default_factory=list)
    published: list[tuple[str, bytes, dict[str, str]]] = field(default_factory=list)

    async def request(
        self, subject: str, data: bytes, *, headers: dict[str, str], timeout: float
    ) -> SimpleNamespace:
        self.requests.append((subject, data, headers))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return SimpleNamespace(data=answer)

    async def publish(self, subject: str, data: bytes, *, headers: dict[str, str]) -> None:
        self.published.append((subject, data, headers))


@pytest.fixture
def pauses(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The back-off pauses taken, instead of sleeping them."""
    taken: list[float] = []

    async def sleep(delay: float) -> None:
        taken.append(delay)

    monkeypatch.setattr(_commit, "asyncio", SimpleNamespace(sleep=sleep))
    return taken


class TestPublishExpecting:
    """One guarded message, and the back-off it shares with atomic batches."""

    async def test_the_guard_goes_with_the_message(self, pauses: list[float]) -> None:
        """The message carries the expected last subject sequence; its sequence comes back."""
        nc = ScriptedConnection([ack(7)])
        assert 7 == await publish_expecting(nc, "p.history.a", b"{}", 6)
        assert [("p.history.a", b"{}", {"Nats-Expected-Last-Subject-Sequence": "6"})] == (
            nc.requests
        )

    @pytest.mark.parametrize("err_code", [10071, 10201])
    async def test_a_conflict_is_raised_without_asking_again(
        self, pauses: list[float], err_code: int
    ) -> None:
        """A moved history (10071) or a message id already stored (10201) is raised at once:
        the caller reads the history again before it retries."""
        nc = ScriptedConnection([refusal(400, err_code), ack(1)])
        with pytest.raises(AppendConflictError):
            await publish_expecting(nc, "p.history.a", b"{}", 0)
        assert 1 == len(nc.requests)

    async def test_no_leader_is_asked_again_after_a_back_off(self, pauses: list[float]) -> None:
        """No responders and a leader still catching up (10163) stored nothing: asked again,
        each pause longer than the one before."""
        nc = ScriptedConnection([nats.errors.NoRespondersError(), refusal(503, 10163), ack(3)])
        assert 3 == await publish_expecting(nc, "p.history.a", b"{}", 2)
        assert 3 == len(nc.requests)
        assert 2 == len(pauses) and pauses[0] < pauses[1]

    async def test_a_leader_that_never_comes_is_unavailable(self, pauses: list[float]) -> None:
        """After six back-offs without a leader the append is UnavailableError."""
        nc = ScriptedConnection([refusal(503, 10008)] * 10)
        with pytest.raises(UnavailableError):
            await publish_expecting(nc, "p.history.a", b"{}", 0)
        assert (7, 6) == (len(nc.requests), len(pauses))

    async def test_a_lost_ack_is_not_asked_again(self, pauses: list[float]) -> None:
        """A timeout may hide a stored write: it is raised for the caller to read the history,
        never sent again blindly."""
        nc = ScriptedConnection([nats.errors.TimeoutError(), ack(1)])
        with pytest.raises(nats.errors.TimeoutError):
            await publish_expecting(nc, "p.history.a", b"{}", 0)
        assert 1 == len(nc.requests)

    async def test_other_refusals_are_raised(self, pauses: list[float]) -> None:
        """A refusal that is neither a conflict nor unavailability is a JetStreamError."""
        nc = ScriptedConnection([refusal(400, 10054)])
        with pytest.raises(JetStreamError):
            await publish_expecting(nc, "p.history.a", b"{}", 0)


class TestAppendBatch:
    """Several messages of one instance as one ADR-50 atomic batch."""

    MESSAGES = (
        DispatchMessage("p.history.a", b"1"),
        DispatchMessage("p.history.a", b"2"),
        DispatchMessage("p.outbox.activity.q", b"3", {"Nats-Msg-Id": "a:1:task"}),
    )

    async def test_headers_of_a_batch(self, pauses: list[float]) -> None:
        """Every message names the batch and its place in it; the first carries the guard,
        the last the commit and is the one request; the commit's sequence comes back."""
        nc = ScriptedConnection([ack(12)])
        assert 12 == await append_batch(nc, 9, self.MESSAGES)
        (*sent, (last_subject, _, last)) = [*nc.published, *nc.requests]
        batch_id = last["Nats-Batch-Id"]
        assert [
            ("p.history.a", b"1", {"Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": "1",
                                   "Nats-Expected-Last-Subject-Sequence": "9"}),
            ("p.history.a", b"2", {"Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": "2"}),
        ] == sent
        assert ("p.outbox.activity.q", {
            "Nats-Msg-Id": "a:1:task", "Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": "3",
            "Nats-Batch-Commit": "1",
        }) == (last_subject, last)

    async def test_full_batch_slots_are_asked_again_at_once(self, pauses: list[float]) -> None:
        """A stream whose batch slots other writers filled (10176) stored nothing: the batch
        is sent again, under a new batch id, after a short pause."""
        nc = ScriptedConnection([refusal(400, 10176), ack(5)])
        assert 5 == await append_batch(nc, 0, self.MESSAGES)
        first, second = (headers["Nats-Batch-Id"] for _, _, headers in nc.requests)
        assert (2, 1, True) == (len(nc.requests), len(pauses), first != second)
        assert pauses[0] < 0.05

    async def test_an_oversized_message_sends_nothing(self, pauses: list[float]) -> None:
        """A message over the max payload is refused before any of the batch is sent."""
        nc = ScriptedConnection([ack(1)], max_payload=10)
        big = DispatchMessage("p.history.a", b"x" * 11)
        with pytest.raises(nats.errors.MaxPayloadError):
            await append_batch(nc, 0, [DispatchMessage("p.history.a", b"1"), big])
        assert ([], []) == (nc.published, nc.requests)

    async def test_a_conflict_is_raised(self, pauses: list[float]) -> None:
        """A batch refused for a stale expected sequence is AppendConflictError, not retried."""
        nc = ScriptedConnection([refusal(400, 10071), ack(1)])
        with pytest.raises(AppendConflictError):
            await append_batch(nc, 0, self.MESSAGES)
        assert 1 == len(nc.requests)
