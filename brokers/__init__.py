"""The NATS JetStream binding: the only package that speaks to NATS.

Streams, consumers, the history store, durable timers, atomic appends and the instances KV.
"""

from brokers._auth import InvalidNatsAuthError, NatsAuth
from brokers._errors import AppendConflictError, UnavailableError
from brokers._jetstream import (
    DispatchMessage,
    JetStreamBroker,
    NatsAuthorizationError,
    NatsTlsError,
    Subjects,
    connect_nats,
)
from brokers._server import EmbeddedNatsServer, free_port, nats_server_binary

__all__ = [
    "AppendConflictError",
    "DispatchMessage",
    "EmbeddedNatsServer",
    "InvalidNatsAuthError",
    "JetStreamBroker",
    "NatsAuth",
    "NatsAuthorizationError",
    "NatsTlsError",
    "Subjects",
    "UnavailableError",
    "connect_nats",
    "free_port",
    "nats_server_binary",
]
