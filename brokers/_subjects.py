"""Names under one prefix: subjects, streams, buckets and consumers; the defaults of the prefix
and the server URL; the messages written beside history.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

_PREFIX = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
DEFAULT_PREFIX = "jetloom"


def nats_url(url: str | None = None) -> str:
    """``url``, else NATS_URL, else ``nats://127.0.0.1:4222``."""
    return url or os.environ.get("NATS_URL") or DEFAULT_NATS_URL


def prefix_or_default(prefix: str | None = None) -> str:
    """``prefix``, else JETLOOM_PREFIX, else ``jetloom``."""
    return prefix or os.environ.get("JETLOOM_PREFIX") or DEFAULT_PREFIX


def app_id_or_default(app_id: str | None = None) -> str:
    """``app_id``, else APP_ID (what ``dapr run --app-id`` sets), else '' (no application)."""
    return os.environ.get("APP_ID", "") if app_id is None else app_id


@dataclass(frozen=True)
class Subjects:
    """Subject, stream and bucket names under one prefix (one namespace per application)."""

    prefix: str = DEFAULT_PREFIX

    @classmethod
    def of(cls, prefix: str | None = None) -> Subjects:
        """The subjects of ``prefix``, else JETLOOM_PREFIX, else ``jetloom``."""
        return cls(prefix_or_default(prefix))

    def __post_init__(self) -> None:
        if not _PREFIX.match(self.prefix):
            raise ValueError(
                f"invalid prefix {self.prefix!r}: use up to 32 lower-case letters, digits, "
                "'-' or '_', starting with a letter"
            )

    @property
    def history_stream(self) -> str:
        """Stream of histories, dispatches and timers."""
        return f"{self.prefix.upper()}_HISTORY"

    @property
    def work_stream(self) -> str:
        """Work-queue stream consumed by workers."""
        return f"{self.prefix.upper()}_WORK"

    @property
    def deadletter_stream(self) -> str:
        """Stream of messages that could not be used."""
        return f"{self.prefix.upper()}_DEADLETTER"

    @property
    def instances_bucket(self) -> str:
        """KV bucket of instance records."""
        return f"{self.prefix}_instances"

    @property
    def payloads_bucket(self) -> str:
        """Object Store bucket of payloads over the inline size threshold."""
        return f"{self.prefix}_payloads"

    @property
    def schedules_bucket(self) -> str:
        """KV bucket of recurring schedules."""
        return f"{self.prefix}_schedules"

    def history(self, instance_id: str) -> str:
        """Subject of one instance's history."""
        return f"{self.prefix}.history.{instance_id}"

    def timer(self, instance_id: str, timer_id: int | str) -> str:
        """Subject holding one timer's schedule."""
        return f"{self.prefix}.timer.{instance_id}.{timer_id}"

    def retention_timer(self, instance_id: str) -> str:
        """Subject of the message schedule that purges a finished instance (its retention)."""
        return self.timer(instance_id, "retention")

    def cancel(self, instance_id: str) -> str:
        """Subject of the requests to stop activities of an instance."""
        return f"{self.prefix}.cancel.{instance_id}"

    @property
    def cancels(self) -> str:
        """Wildcard of every instance's cancel requests (what activity workers listen to)."""
        return f"{self.prefix}.cancel.*"

    def schedule(self, schedule_id: str) -> str:
        """Subject holding a recurring schedule (a message schedule, ADR-51)."""
        return f"{self.prefix}.schedule.{schedule_id}"

    def is_schedule(self, subject: str) -> bool:
        """True for a recurring schedule's subject (``<p>.schedule.<id>``)."""
        return subject.startswith(f"{self.prefix}.schedule.")

    def start(self, workflow_name: str, app: str = "") -> str:
        """Public subject to start a workflow (of application ``app``, if given)."""
        if app:
            return f"{self.prefix}.app.{app}.start.{workflow_name}"
        return f"{self.prefix}.start.{workflow_name}"

    def is_start(self, subject: str) -> bool:
        """True for a public start subject (``<p>.start.<workflow>``, or
        ``<p>.app.<app>.start.<workflow>``)."""
        if subject.startswith(f"{self.prefix}.start."):
            return True
        tokens = subject.split(".")
        return len(tokens) == 5 and tokens[1] == "app" and tokens[3] == "start" and (
            tokens[0] == self.prefix
        )

    def inbox(self, instance_id: str, app: str = "") -> str:
        """Subject of events sent to an instance (hosted by application ``app``, if given) from
        outside the history stream."""
        if app:
            return f"{self.prefix}.app.{app}.inbox.{instance_id}"
        return f"{self.prefix}.inbox.{instance_id}"

    def outbox_workflow(self, instance_id: str, app: str = "") -> str:
        """Subject of work items for an instance (hosted by application ``app``, if given)
        written with history."""
        if app:
            return f"{self.prefix}.outbox.app.{app}.{instance_id}"
        return f"{self.prefix}.outbox.workflow.{instance_id}"

    def outbox_activity(self, task_queue: str) -> str:
        """Subject of activity tasks of a task queue."""
        return f"{self.prefix}.outbox.activity.{task_queue}"

    def deadletter(self, kind: str) -> str:
        """Dead-letter subject for one kind of message."""
        return f"{self.prefix}.deadletter.{kind}"

    @property
    def work_routing(self) -> list[dict[str, str]]:
        """How the work stream sources dispatches from the history stream.

        Work for an instance lands on its inbox subject, so the workflows consumer needs the
        single filter ``<p>.*.*`` (start and inbox), much cheaper for the server than several
        filters; activity tasks keep their subjects.
        """
        p = self.prefix
        return [
            {"src": f"{p}.outbox.workflow.*", "dest": f"{p}.inbox.{{{{wildcard(1)}}}}"},
            {"src": f"{p}.outbox.activity.*", "dest": f"{p}.outbox.activity.{{{{wildcard(1)}}}}"},
        ]

    @property
    def app_work_routing(self) -> list[dict[str, str]]:
        """How the work stream sources work for instances of named applications: a second
        source, so that adding it to an existing stream leaves the first one's position alone.
        """
        p = self.prefix
        return [{
            "src": f"{p}.outbox.app.*.*",
            "dest": f"{p}.app.{{{{wildcard(1)}}}}.inbox.{{{{wildcard(2)}}}}",
        }]

    @property
    def workflow_work(self) -> list[str]:
        """Filter of the workflows consumer: start events and instance inboxes."""
        return [f"{self.prefix}.*.*"]

    @property
    def workflow_work_unrouted(self) -> list[str]:
        """Filters of the workflows consumer on a work stream created before inbox routing,
        which keeps sourced work items on ``<p>.outbox.workflow.<instance>``."""
        p = self.prefix
        return [f"{p}.start.*", f"{p}.inbox.*", f"{p}.outbox.workflow.*"]

    def workflow_filters(self, app: str, *, routed: bool) -> list[str]:
        """Filters of the workflows consumer of application ``app`` ('': the default one,
        ``workflow_work``); ``routed`` is False on a work stream created before inbox routing,
        where sourced work items keep their outbox subjects."""
        p = self.prefix
        if not app:
            return self.workflow_work if routed else self.workflow_work_unrouted
        own = [f"{p}.app.{app}.*.*"]  # its start events and inboxes
        return own if routed else [*own, f"{p}.outbox.app.{app}.*"]

    def instance_of(self, subject: str) -> str:
        """The instance id at the end of an inbox (or outbox.workflow) subject."""
        return subject.rsplit(".", 1)[-1]

    @property
    def workflows_consumer(self) -> str:
        """Durable consumer of workflow work items of the default application."""
        return "workflows"

    def app_workflows_consumer(self, app: str = "") -> str:
        """Durable consumer of the workflow work items of application ``app``."""
        return f"workflows-{app}" if app else self.workflows_consumer

    def activities_consumer(self, task_queue: str) -> str:
        """Durable consumer of a task queue's activity tasks."""
        return f"activities-{task_queue}"


@dataclass
class DispatchMessage:
    """A message written in the same atomic batch as history events."""

    subject: str
    data: bytes
    headers: dict[str, str] = field(default_factory=dict)


def schedule_headers(fire_at: datetime, target: str, ttl: str | None = None) -> dict[str, str]:
    """Headers of a message schedule (ADR-51) that publishes its body to ``target`` once, at
    ``fire_at``; with ``ttl``, the fired message carries that per-message TTL."""
    headers = {
        "Nats-Schedule": "@at " + fire_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "Nats-Schedule-Target": target,
    }
    if ttl is not None:
        headers["Nats-Schedule-TTL"] = ttl
    return headers


def recurring_schedule_headers(
    schedule: str, target: str, ttl: str, time_zone: str | None = None
) -> dict[str, str]:
    """Headers of a recurring message schedule (ADR-51): the server publishes the message's
    body to ``target`` on every tick of ``schedule`` (six-field cron or ``@every <d>``), each
    copy with the per-message TTL ``ttl``. A cron expression is read in UTC, or in the IANA
    ``time_zone`` (``Nats-Schedule-Time-Zone``: nats-server 2.14+, refused with ``@every``).
    Every copy carries ``Nats-Scheduler`` (this schedule's subject) and ``Nats-Schedule-Next``
    (the following tick)."""
    headers = {
        "Nats-Schedule": schedule,
        "Nats-Schedule-Target": target,
        "Nats-Schedule-TTL": ttl,
    }
    if time_zone is not None:
        headers["Nats-Schedule-Time-Zone"] = time_zone
    return headers
