"""The NATS JetStream binding: the only package that speaks to NATS.

Streams, consumers, the history store, durable timers, atomic appends, the instances KV
and the one watch of it that a client's waits share.
"""

from brokers._auth import InvalidNatsAuthError, NatsAuth
from brokers._errors import (
    MESSAGING_ERRORS,
    TRANSIENT_ERRORS,
    AppendConflictError,
    PayloadTooLargeError,
    UnavailableError,
)
from brokers._jetstream import (
    DEFAULT_NATS_URL,
    DEFAULT_PREFIX,
    Connection,
    DispatchMessage,
    JetStreamBroker,
    NatsAuthorizationError,
    NatsTlsError,
    Subjects,
    connect_nats,
    nats_url,
    prefix_or_default,
    schedule_headers,
)
from brokers._payload_store import (
    DEFAULT_THRESHOLD,
    MIN_THRESHOLD,
    PayloadMissingError,
    PayloadRef,
    PayloadStore,
    payload_ref,
)
from brokers._pull import PullStream, WorkMessage
from brokers._record_watch import RecordChanges, RecordWatch, WatchClosedError
from brokers._server import EmbeddedNatsServer, free_port, nats_server_binary
from brokers._sourcing import watch_sourcing

__all__ = [
    "DEFAULT_NATS_URL",
    "DEFAULT_PREFIX",
    "DEFAULT_THRESHOLD",
    "MIN_THRESHOLD",
    "MESSAGING_ERRORS",
    "TRANSIENT_ERRORS",
    "AppendConflictError",
    "Connection",
    "DispatchMessage",
    "EmbeddedNatsServer",
    "InvalidNatsAuthError",
    "JetStreamBroker",
    "NatsAuth",
    "NatsAuthorizationError",
    "NatsTlsError",
    "PayloadMissingError",
    "PayloadRef",
    "PayloadStore",
    "PayloadTooLargeError",
    "PullStream",
    "RecordChanges",
    "RecordWatch",
    "Subjects",
    "UnavailableError",
    "WatchClosedError",
    "WorkMessage",
    "connect_nats",
    "free_port",
    "nats_server_binary",
    "nats_url",
    "payload_ref",
    "prefix_or_default",
    "schedule_headers",
    "watch_sourcing",
]
