"""The NATS JetStream binding: the only package that speaks to NATS.

Streams, consumers, the history store, durable timers, atomic appends, the instances KV
and the one watch of it that a client's waits share.
"""

from brokers._auth import InvalidNatsAuthError, NatsAuth
from brokers._errors import AppendConflictError, UnavailableError
from brokers._jetstream import (
    DEFAULT_NATS_URL,
    DEFAULT_PREFIX,
    DispatchMessage,
    JetStreamBroker,
    NatsAuthorizationError,
    NatsTlsError,
    Subjects,
    connect_nats,
    nats_url,
    prefix_or_default,
)
from brokers._record_watch import RecordChanges, RecordWatch, WatchClosedError
from brokers._server import EmbeddedNatsServer, free_port, nats_server_binary

__all__ = [
    "DEFAULT_NATS_URL",
    "DEFAULT_PREFIX",
    "AppendConflictError",
    "DispatchMessage",
    "EmbeddedNatsServer",
    "InvalidNatsAuthError",
    "JetStreamBroker",
    "NatsAuth",
    "NatsAuthorizationError",
    "NatsTlsError",
    "RecordChanges",
    "RecordWatch",
    "Subjects",
    "UnavailableError",
    "WatchClosedError",
    "connect_nats",
    "free_port",
    "nats_server_binary",
    "nats_url",
    "prefix_or_default",
]

# isort: split
# What operator tools (the jetloom CLI) need: a connection that fails fast and says why, the
# command line's credential options, and the state of streams and consumers.
from brokers._admin import (
    ConsumerStats,
    StreamStats,
    check_reachable,
    connect_fail_fast,
    consumer_stats,
    stream_stats,
)
from brokers._auth import ENVIRONMENT as NATS_AUTH_ENVIRONMENT
from brokers._auth import OPTIONS as NATS_AUTH_OPTIONS
from brokers._auth import with_default_auth
from brokers._errors import (
    CONNECTION_LOST_ERRORS,
    NO_JETSTREAM_ERRORS,
    NatsHungUpError,
    NatsUnreachableError,
    RequestTimeoutError,
)
from brokers._jetstream import redact_url

__all__ += [
    "CONNECTION_LOST_ERRORS",
    "NATS_AUTH_ENVIRONMENT",
    "NATS_AUTH_OPTIONS",
    "NO_JETSTREAM_ERRORS",
    "ConsumerStats",
    "NatsHungUpError",
    "NatsUnreachableError",
    "RequestTimeoutError",
    "StreamStats",
    "check_reachable",
    "connect_fail_fast",
    "consumer_stats",
    "redact_url",
    "stream_stats",
    "with_default_auth",
]
