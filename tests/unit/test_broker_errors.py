"""How JetStream's answers to appends and API requests become errors (no server)."""

from __future__ import annotations

import nats.errors
import pytest

from brokers._errors import (
    AppendConflictError,
    JetStreamError,
    UnavailableError,
    api_error,
    append_error,
    retry_transient,
)
from brokers._topology import kept_replicas


def error(code: int, err_code: int, description: str = "") -> dict[str, object]:
    """The error object of a refused publish."""
    return {"code": code, "err_code": err_code, "description": description}


class TestAppendError:
    """The error of a refused atomic append."""

    @pytest.mark.parametrize(
        "err_code",
        [
            10071,  # wrong last sequence: {seq}
            10164,  # wrong last sequence (newer servers)
            10158,  # duplicate message id is in process
            10201,  # batch with a duplicate message id
        ],
    )
    def test_a_moved_history_is_a_conflict(self, err_code: int) -> None:
        """Errors saying the history moved (or is being written) mean: read it again, retry."""
        assert isinstance(append_error(error(400, err_code)), AppendConflictError)

    @pytest.mark.parametrize(("code", "err_code"), [(503, 10163), (503, 10008), (503, 0)])
    def test_a_leader_not_ready_is_unavailable(self, code: int, err_code: int) -> None:
        """A new leader still catching up, or any 503, is retried after a back-off."""
        assert isinstance(append_error(error(code, err_code)), UnavailableError)

    def test_other_errors_are_refusals(self) -> None:
        """Anything else is a JetStreamError with its code."""
        refused = append_error(error(400, 10054, "message size exceeds maximum allowed"))
        assert isinstance(refused, JetStreamError)
        assert 10054 == refused.err_code


class TestApiError:
    """Errors of API replies."""

    def test_unavailability_is_told_apart(self) -> None:
        """10008 (no meta leader) is UnavailableError; a missing stream is a JetStreamError."""
        assert [UnavailableError, JetStreamError] == [
            type(api_error({"code": 503, "err_code": 10008})),
            type(api_error({"code": 404, "err_code": 10059})),
        ]


class TestKeptReplicas:
    """Replicas of an existing stream when a runtime asks for some."""

    def test_replicas_are_raised_never_lowered(self) -> None:
        """The larger of the current and the requested count wins."""
        assert [3, 3, 3, 1] == [
            kept_replicas(3, 1), kept_replicas(1, 3), kept_replicas(None, 3),
            kept_replicas(None, 1),
        ]


class TestRetryTransient:
    """Reads asked again while a leader is elected."""

    async def test_a_read_that_recovers_returns_its_value(self) -> None:
        """Two UnavailableErrors, then a value: the value comes back after three calls."""
        calls: list[int] = []

        async def read() -> str:
            calls.append(1)
            if len(calls) < 3:
                raise UnavailableError("no leader")
            return "record"

        assert "record" == await retry_transient(read, first_delay=0.001)
        assert 3 == len(calls)

    async def test_a_read_that_stays_unavailable_raises_after_the_budget(self) -> None:
        """When the cluster does not recover within the budget, the last error is raised."""
        calls: list[int] = []

        async def read() -> str:
            calls.append(1)
            raise nats.errors.NoRespondersError

        with pytest.raises(nats.errors.NoRespondersError):
            await retry_transient(read, budget=0.05, first_delay=0.001)
        assert len(calls) > 1

    async def test_unavailable_after_the_budget_says_what_to_check(self) -> None:
        """An UnavailableError that outlasts the budget keeps its text and says what to check."""

        async def read() -> str:
            raise UnavailableError("JetStream error 10008: no leader")

        with pytest.raises(UnavailableError, match=r"10008.*majority of its nodes"):
            await retry_transient(read, budget=0.05, first_delay=0.001)

    async def test_other_errors_are_not_retried(self) -> None:
        """A refusal (e.g. a missing stream) is raised at once."""
        calls: list[int] = []

        async def read() -> str:
            calls.append(1)
            raise JetStreamError(10059, "stream not found")

        with pytest.raises(JetStreamError):
            await retry_transient(read, first_delay=0.001)
        assert 1 == len(calls)
