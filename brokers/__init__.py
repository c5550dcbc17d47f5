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
