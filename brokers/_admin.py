"""What operator tools (the jetloom CLI) need from NATS beyond the engine's own work.

A connection that fails fast and says why (a runtime's reconnects forever instead), and the
state of streams and consumers as plain values rather than nats-py's info objects.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

import nats.errors
import nats.js.errors
from nats.js.api import ConsumerInfo

from brokers._connect import (
    Connection,
    NatsAuthorizationError,
    NatsTlsError,
    connect_nats,
    redact_url,
)
from brokers._errors import NatsHungUpError, NatsUnreachableError
from brokers._jetstream import JetStreamBroker


async def _ignore_error(exc: Exception) -> None:
    """Connection trouble is reported once, as the caller's error, not per attempt."""


async def _ignore_event() -> None:
    """A tool's own close is not worth a 'disconnected' log line on its output."""


def _fail_fast_options() -> dict[str, Any]:
    """Give up at once instead of reconnecting forever.

    nats-py only gives up on a server once it failed more than ``max_reconnect_attempts``
    times and treats 0 as "no limit", so 1 is the smallest bound (two quick attempts).
    """
    return {
        "allow_reconnect": False,
        "max_reconnect_attempts": 1,
        "reconnect_time_wait": 0.1,
        "connect_timeout": 2,
        "error_cb": _ignore_error,
        "disconnected_cb": _ignore_event,
        "reconnected_cb": _ignore_event,
    }


async def connect_fail_fast(url: str, **options: Any) -> Connection:
    """A connection to ``url`` that gives up within seconds and never reconnects.

    ``options`` go to ``nats.connect`` (credentials and TLS, e.g.
    ``NatsAuth(...).connect_options()``), completed from the NATS_* environment as
    ``connect_nats`` does.

    Raises:
        NatsAuthorizationError: the server refused the credentials.
        NatsTlsError: the TLS handshake failed (``ssl_error`` says why).
        NatsHungUpError: the server closed the connection before it was established.
        NatsUnreachableError: no server answered at ``url``.
    """
    shown = redact_url(url)
    try:
        return await connect_nats(url, **_fail_fast_options(), **options)
    except (NatsAuthorizationError, NatsTlsError):
        raise
    except ssl.SSLError as exc:
        raise NatsTlsError(f"TLS with NATS at {shown} failed ({exc})", exc) from None
    except ConnectionRefusedError:
        raise NatsUnreachableError(f"NATS at {shown} refused the connection") from None
    except (ConnectionError, nats.errors.UnexpectedEOF):  # reset, broken pipe: it hung up
        raise NatsHungUpError(
            f"NATS at {shown} closed the connection before it was established"
        ) from None
    except (nats.errors.Error, OSError, TimeoutError) as exc:
        raise NatsUnreachableError(
            f"no NATS server answered at {shown} ({str(exc) or type(exc).__name__})"
        ) from None


async def check_reachable(url: str, **options: Any) -> None:
    """Connect once as ``connect_fail_fast`` does, and close: a wrong URL, credentials or TLS
    file is one clear error before a long-running service starts."""
    nc = await connect_fail_fast(url, **options)
    await nc.close()


@dataclass(frozen=True)
class ConsumerStats:
    """Where a durable consumer of a stream stands."""

    name: str
    pending: int
    """Messages of its filter not delivered yet (its backlog)."""
    in_flight: int
    """Delivered and not acknowledged yet."""
    redelivered: int
    """Delivered more than once and not acknowledged yet."""
    waiting_pulls: int
    """Pull requests waiting for messages (roughly: idle workers)."""
    delivered: int
    """Deliveries so far (the consumer's sequence)."""


@dataclass(frozen=True)
class StreamStats:
    """How much a stream holds."""

    name: str
    messages: int
    bytes: int = 0
    """Bytes stored (messages with their subjects and headers)."""


def _consumer_stats(info: ConsumerInfo) -> ConsumerStats:
    return ConsumerStats(
        name=info.name,
        pending=info.num_pending or 0,
        in_flight=info.num_ack_pending or 0,
        redelivered=info.num_redelivered or 0,
        waiting_pulls=info.num_waiting or 0,
        delivered=(info.delivered.consumer_seq or 0) if info.delivered else 0,
    )


async def consumer_stats(broker: JetStreamBroker, stream: str) -> list[ConsumerStats]:
    """Every consumer of ``stream``, in the server's order."""
    return [_consumer_stats(info) for info in await broker.js.consumers_info(stream)]


async def stream_stats(broker: JetStreamBroker, stream: str) -> StreamStats:
    """How many messages (and bytes) ``stream`` holds."""
    info = await broker.js.stream_info(stream)
    return StreamStats(
        name=stream, messages=info.state.messages or 0, bytes=info.state.bytes or 0
    )


async def storage_stats(broker: JetStreamBroker) -> list[StreamStats]:
    """What each stream of the prefix stores, buckets included: history, work, dead letters,
    the instances and schedules KV buckets and the payloads Object Store (a bucket never
    created, such as the schedules' before the first schedule, is left out)."""
    s = broker.subjects
    names = [
        s.history_stream, s.work_stream, s.deadletter_stream, f"KV_{s.instances_bucket}",
        f"KV_{s.schedules_bucket}", f"OBJ_{s.payloads_bucket}",
    ]
    found = []
    for name in names:
        try:
            found.append(await stream_stats(broker, name))
        except nats.js.errors.NotFoundError:
            continue
    return found
