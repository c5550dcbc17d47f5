"""The NATS JetStream binding: the only package that speaks to NATS.

Streams, consumers, the history store, durable timers, atomic appends, the instances KV
and the one watch of it that a client's waits share.
"""

from brokers._auth import InvalidNatsAuthError, NatsAuth
from brokers._connect import (
    Connection,
    NatsAuthorizationError,
    NatsTlsError,
    connect_nats,
    redact_url,
)
from brokers._errors import (
    MESSAGING_ERRORS,
    TRANSIENT_ERRORS,
    AppendConflictError,
    PayloadTooLargeError,
    UnavailableError,
)
from brokers._heartbeat import WorkerHeartbeat, read_workers
from brokers._jetstream import JetStreamBroker
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
from brokers._records import RecordEntry
from brokers._server import EmbeddedNatsServer, free_port, nats_server_binary
from brokers._signals import CancelListener
from brokers._sourcing import watch_sourcing
from brokers._subjects import (
    DEFAULT_NATS_URL,
    DEFAULT_PREFIX,
    DispatchMessage,
    Subjects,
    app_id_or_default,
    nats_url,
    prefix_or_default,
    recurring_schedule_headers,
    schedule_headers,
)
from brokers._tasks import stop_tasks
from brokers._topology import WorkStreamLayout

__all__ = [
    "DEFAULT_NATS_URL",
    "DEFAULT_PREFIX",
    "DEFAULT_THRESHOLD",
    "MESSAGING_ERRORS",
    "MIN_THRESHOLD",
    "TRANSIENT_ERRORS",
    "AppendConflictError",
    "CancelListener",
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
    "RecordEntry",
    "RecordWatch",
    "Subjects",
    "UnavailableError",
    "WatchClosedError",
    "WorkMessage",
    "WorkStreamLayout",
    "WorkerHeartbeat",
    "app_id_or_default",
    "connect_nats",
    "free_port",
    "nats_server_binary",
    "nats_url",
    "payload_ref",
    "prefix_or_default",
    "read_workers",
    "recurring_schedule_headers",
    "redact_url",
    "schedule_headers",
    "watch_sourcing",
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
    storage_stats,
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
    "stop_tasks",
    "storage_stats",
    "stream_stats",
    "with_default_auth",
]
