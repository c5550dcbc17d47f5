"""The NATS JetStream binding: the only package that speaks to NATS.

Streams, consumers, the history store, durable timers, atomic appends and the instances KV.
"""

from brokers._jetstream import (
    AppendConflictError,
    DispatchMessage,
    JetStreamBroker,
    Subjects,
    connect_nats,
)

__all__ = ["AppendConflictError", "DispatchMessage", "JetStreamBroker", "Subjects", "connect_nats"]
