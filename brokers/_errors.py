"""What JetStream's refusals mean to jetloom: error codes and the exceptions they become."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import nats.errors
import nats.js.errors

T = TypeVar("T")

ERR_WRONG_LAST_SEQUENCE = 10071
ERR_WRONG_LAST_SEQUENCE_CONSTANT = 10164  # the same, from newer servers (no sequence in text)
ERR_DUPLICATE_MSG_ID_IN_PROCESS = 10158  # a message with this id is being stored right now
ERR_BATCH_INCOMPLETE = 10176
ERR_BATCH_DUPLICATE_MSG_ID = 10201
ERR_CLUSTER_NOT_AVAILABLE = 10008  # JetStream system temporarily unavailable (no meta leader)
ERR_LAST_SEQ_PER_SUBJECT_NOT_READY = 10163  # a new stream leader is still catching up
CONFLICT_ERRORS = frozenset(
    {
        ERR_WRONG_LAST_SEQUENCE,
        ERR_WRONG_LAST_SEQUENCE_CONSTANT,
        ERR_DUPLICATE_MSG_ID_IN_PROCESS,
        ERR_BATCH_DUPLICATE_MSG_ID,
    }
)
"""Append errors that mean the history moved (or is moving) under us: read it again, retry."""
UNAVAILABLE_ERRORS = frozenset({ERR_CLUSTER_NOT_AVAILABLE, ERR_LAST_SEQ_PER_SUBJECT_NOT_READY})
"""API errors of a cluster electing or catching up a leader: retry after a short back-off."""


PayloadTooLargeError = nats.errors.MaxPayloadError
"""A message larger than the server's max payload (1 MB by default)."""


class AppendConflictError(Exception):
    """Another writer advanced the instance's history first (optimistic concurrency)."""


class UnavailableError(Exception):
    """JetStream did not answer (no responders, 503): a server or leader is changing."""


class JetStreamError(Exception):
    """JetStream refused a request."""

    def __init__(self, err_code: int, description: str) -> None:
        super().__init__(f"JetStream error {err_code}: {description}")
        self.err_code = err_code


def api_error(error: dict[str, Any]) -> Exception:
    """The exception for an ``error`` object of a JetStream API reply or publish ack.

    A 503 status or an error of a leader election (``UNAVAILABLE_ERRORS``) is an
    ``UnavailableError``, which callers retry after a back-off; anything else a
    ``JetStreamError``.
    """
    code = int(error.get("err_code", 0) or 0)
    description = str(error.get("description", ""))
    if code in UNAVAILABLE_ERRORS or error.get("code") == 503:
        return UnavailableError(f"JetStream error {code}: {description}")
    return JetStreamError(code, description)


def append_error(error: dict[str, Any]) -> Exception:
    """The exception for a refused append: a conflict (``CONFLICT_ERRORS``: a duplicate message
    id too means this task's dispatches are already stored, so the history must be read again)
    or what ``api_error`` says."""
    if int(error.get("err_code", 0) or 0) in CONFLICT_ERRORS:
        return AppendConflictError(str(error.get("description", "")))
    return api_error(error)


TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    UnavailableError,
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.StaleConnectionError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.NoStreamResponseError,
    TimeoutError,
)
"""Errors that a leader election, a server restart or a reconnect explains: the same request
may work a moment later."""

MESSAGING_ERRORS: tuple[type[Exception], ...] = (
    *TRANSIENT_ERRORS,
    nats.errors.ConnectionClosedError,
)
"""Errors of the messaging layer rather than of the work at hand: the transient ones, and a
connection closed under the caller (a worker shutting down)."""


async def retry_transient(
    read: Callable[[], Awaitable[T]],
    *,
    budget: float = 20.0,
    first_delay: float = 0.05,
    retrying: tuple[type[Exception], ...] = TRANSIENT_ERRORS,
) -> T:
    """``await read()``, asked again with a growing back-off (up to 1 s) while it fails with a
    ``retrying`` error, until ``budget`` seconds have passed; then the error is raised.

    Only for reads (and writes deduplicated by the server), which are safe to repeat.
    """
    deadline = time.monotonic() + budget
    delay = first_delay
    while True:
        try:
            return await read()
        except retrying as exc:
            if time.monotonic() + delay > deadline:
                if isinstance(exc, UnavailableError):
                    raise UnavailableError(
                        f"{exc}; still no answer after {budget:g} s: check that the NATS server"
                        " (on a cluster, a majority of its nodes) is up"
                    ) from exc
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)


# What an operator tool (the jetloom CLI) tells apart when a connection or a request fails.


class NatsUnreachableError(ConnectionError):
    """No NATS server answered at the URL: refused, timed out, or no route to it."""


class NatsHungUpError(NatsUnreachableError):
    """A NATS server closed the connection before it was established; a server that requires
    a TLS client certificate does that to a client without one."""


NO_JETSTREAM_ERRORS: tuple[type[Exception], ...] = (
    nats.errors.NoRespondersError,
    nats.js.errors.ServiceUnavailableError,
)
"""Nobody answered a JetStream request: the server runs without JetStream (``-js``)."""

CONNECTION_LOST_ERRORS: tuple[type[Exception], ...] = (
    nats.errors.ConnectionClosedError,
    nats.errors.UnexpectedEOF,
)
"""The connection closed under a request (the server went away)."""

RequestTimeoutError = nats.errors.TimeoutError
"""A request to NATS got no answer in time (also a builtin ``TimeoutError``)."""
