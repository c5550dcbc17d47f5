"""Recurring schedules: their specification, their record, and the tick of each firing (pure).

A schedule is a message schedule (ADR-51) kept by nats-server itself, so it fires with no
jetloom process running. Its ``Nats-Schedule`` value is a six-field cron expression (seconds
first) or ``@every <duration>``; every firing carries ``Nats-Schedule-Next`` (the following
tick), from which the tick of the firing itself is derived, and so the id of the instance it
starts: the same firing always yields the same id, two ticks never do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Literal

import msgspec

from engine.core.events import NULL

Overlap = Literal["skip", "allow"]
OVERLAPS: tuple[Overlap, ...] = ("skip", "allow")

_SCHEDULE_ID = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
TICK_FORMAT = "%Y%m%dT%H%M%SZ"
"""How a tick appears in the ids of the instances a schedule starts."""

_ALIASES = {
    "@yearly": "0 0 0 1 1 *",
    "@annually": "0 0 0 1 1 *",
    "@monthly": "0 0 0 1 * *",
    "@weekly": "0 0 0 * * 0",
    "@daily": "0 0 0 * * *",
    "@midnight": "0 0 0 * * *",
    "@hourly": "0 0 * * * *",
}
_MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
_DAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_CRON_YEARS_BACK = 8
"""How far back a cron's previous tick is looked for (a 29 February on a given weekday)."""


def check_schedule_id(schedule_id: str) -> str:
    """Return ``schedule_id`` if valid: 1-40 letters, digits, '-' or '_' (the ids of the
    instances it starts add the tick to it, within the 64 characters of an instance id)."""
    if not isinstance(schedule_id, str) or not _SCHEDULE_ID.match(schedule_id):
        raise ValueError(
            f"invalid schedule id {schedule_id!r}: use 1-40 letters, digits, '-' or '_'"
        )
    return schedule_id


def check_overlap(overlap: str) -> Overlap:
    """Return ``overlap`` if it is ``"skip"`` or ``"allow"``."""
    if overlap == "skip":
        return "skip"
    if overlap == "allow":
        return "allow"
    raise ValueError(f"invalid overlap {overlap!r}: use 'skip' or 'allow'")


def schedule_spec(*, cron: str | None = None, every: timedelta | None = None) -> str:
    """The ``Nats-Schedule`` value of a schedule given as a cron expression or an interval.

    ``cron`` takes six fields (seconds first, as nats-server does), five (minutes first, the
    classic crontab: the seconds are 0) or an alias such as ``@daily``; times are UTC.
    ``every`` is a whole number of seconds, at least one.

    Raises:
        ValueError: neither or both given, or one that is not valid.
    """
    if (cron is None) == (every is None):
        raise ValueError("give a schedule either a cron expression or an interval (every=)")
    if every is not None:
        seconds = every.total_seconds()
        if seconds < 1 or seconds != int(seconds):
            raise ValueError(f"every={every!r}: use a whole number of seconds, at least 1")
        return f"@every {int(seconds)}s"
    assert cron is not None
    text = " ".join(cron.split())
    fields = _ALIASES.get(text.lower(), text).split(" ")
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6:
        raise ValueError(
            f"invalid cron expression {cron!r}: use five fields (minute hour day month "
            "weekday), six (with seconds first) or an alias such as @hourly or @daily"
        )
    spec = " ".join(fields)
    Cron.parse(spec, original=cron)  # raises if a field is not valid
    return spec


def describe_spec(spec: str) -> tuple[str | None, timedelta | None]:
    """The ``(cron, every)`` a ``Nats-Schedule`` value stands for (one of them None)."""
    if spec.startswith("@every "):
        return None, parse_interval(spec[len("@every ") :])
    return spec, None


def tick_of(spec: str, next_at: datetime) -> datetime:
    """The tick of a firing whose ``Nats-Schedule-Next`` is ``next_at``: the interval before
    it, or the cron's last tick before it."""
    cron, every = describe_spec(spec)
    if every is not None:
        return next_at - every
    assert cron is not None
    return Cron.parse(cron).previous(next_at)


def firing_instance_id(schedule_id: str, tick: datetime) -> str:
    """The id of the instance the firing at ``tick`` starts: ``<schedule id>-<tick>``."""
    return f"{schedule_id}-{tick.astimezone(UTC).strftime(TICK_FORMAT)}"


def parse_interval(text: str) -> timedelta:
    """An interval written as Go does (``90s``, ``5m``, ``1h30m``).

    Raises:
        ValueError: anything else.
    """
    found = _DURATION.match(text.strip())
    if not found or not any(found.groups()):
        raise ValueError(f"invalid interval {text!r} (expected e.g. 90s, 5m, 1h30m)")
    hours, minutes, seconds = (int(g or 0) for g in found.groups())
    return timedelta(hours=hours, minutes=minutes, seconds=seconds)


@dataclass(frozen=True)
class Cron:
    """A six-field cron expression (second minute hour day-of-month month day-of-week, UTC)."""

    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    """0 is Sunday."""
    any_day: bool
    """The day-of-month field is ``*`` (then the weekday alone decides, and vice versa)."""
    any_weekday: bool

    @classmethod
    def parse(cls, spec: str, *, original: str | None = None) -> Cron:
        """Parse six fields; names (JAN, MON) in the month and weekday fields.

        Raises:
            ValueError: a field that is not a list of ``*``, numbers, ranges and steps in range.
        """
        fields = spec.split()
        if len(fields) != 6:
            raise ValueError(f"invalid cron expression {original or spec!r}: needs six fields")
        try:
            second, minute, hour, day, month, weekday = (
                _field(fields[0], 0, 59, []),
                _field(fields[1], 0, 59, []),
                _field(fields[2], 0, 23, []),
                _field(fields[3], 1, 31, []),
                _field(fields[4], 1, 12, _MONTHS, first=1),
                _field(fields[5], 0, 7, _DAYS),
            )
        except ValueError as exc:
            raise ValueError(f"invalid cron expression {original or spec!r}: {exc}") from None
        return cls(
            seconds=tuple(sorted(second)),
            minutes=tuple(sorted(minute)),
            hours=tuple(sorted(hour)),
            days=frozenset(day),
            months=frozenset(month),
            weekdays=frozenset(0 if d == 7 else d for d in weekday),  # 7 is Sunday too
            any_day=fields[3] in ("*", "?"),
            any_weekday=fields[5] in ("*", "?"),
        )

    def matches_day(self, day: date) -> bool:
        """True if the expression fires on ``day`` (day-of-month and weekday are alternatives
        when both are restricted, as in crontab)."""
        if day.month not in self.months:
            return False
        in_days = day.day in self.days
        in_weekdays = (day.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return in_days and in_weekdays
        return in_days or in_weekdays

    def previous(self, before: datetime) -> datetime:
        """The last tick strictly before ``before``.

        Raises:
            ValueError: none within the last years (an expression that never fires).
        """
        before = before.astimezone(UTC)
        day = before.date()
        limit: int | None = before.hour * 3600 + before.minute * 60 + before.second
        if before.microsecond:
            limit = (limit or 0) + 1
        for _ in range(366 * _CRON_YEARS_BACK):
            if self.matches_day(day):
                second_of_day = self._latest_time(limit)
                if second_of_day is not None:
                    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
                    return start + timedelta(seconds=second_of_day)
            day -= timedelta(days=1)
            limit = None
        raise ValueError("the cron expression has no tick in the past years")

    def _latest_time(self, limit: int | None) -> int | None:
        """The latest second of a day that the expression fires at, below ``limit``."""
        for hour in reversed(self.hours):
            for minute in reversed(self.minutes):
                base = hour * 3600 + minute * 60
                if limit is not None and base >= limit:
                    continue
                for second in reversed(self.seconds):
                    if limit is None or base + second < limit:
                        return base + second
        return None


def _field(text: str, low: int, high: int, names: list[str], *, first: int = 0) -> set[int]:
    """The values of one cron field: a comma list of ``*``, ``n``, ``a-b``, each with an
    optional ``/step``."""
    values: set[int] = set()
    for item in text.split(","):
        body, _, step_text = item.partition("/")
        step = _number(step_text, names, first) if step_text else 1
        if step < 1:
            raise ValueError(f"step {step_text!r} must be at least 1")
        if body in ("*", "?"):
            start, end = low, high
        elif "-" in body:
            start_text, _, end_text = body.partition("-")
            start, end = _number(start_text, names, first), _number(end_text, names, first)
        else:
            start = _number(body, names, first)
            end = high if step_text else start
        if not low <= start <= end <= high:
            raise ValueError(f"{item!r} is outside {low}-{high} (or a range that runs backwards)")
        values.update(range(start, end + 1, step))
    return values


def _number(text: str, names: list[str], first: int) -> int:
    upper = text.upper()
    if upper in names:
        return names.index(upper) + first
    if not text.isdigit():
        choices = f" or one of {', '.join(names)}" if names else ""
        raise ValueError(f"{text!r} is not a number{choices}")
    return int(text)


class ScheduleRecord(msgspec.Struct, omit_defaults=True):
    """A recurring schedule as kept under its id in the ``<prefix>_schedules`` KV bucket.

    The schedule itself is the message on ``<prefix>.schedule.<schedule_id>`` (absent while
    paused); this record says what a firing starts, and which instance the last one started.
    """

    schedule_id: str
    workflow: str
    schedule: str
    """The ``Nats-Schedule`` value: six-field cron or ``@every <n>s``."""
    created_at: datetime
    input: msgspec.Raw = NULL
    overlap: str = "skip"
    paused: bool = False
    last_instance_id: str = ""
    """The instance the last firing started ("" before the first)."""
    last_fired_at: datetime | None = None
    """The tick of that firing."""
    app_id: str = ""
    """The application whose runtimes run the instances it starts ('': the default one)."""


_record_encoder = msgspec.json.Encoder()
_record_decoder = msgspec.json.Decoder(ScheduleRecord)


def encode_schedule(record: ScheduleRecord) -> bytes:
    """JSON of a schedule record."""
    return _record_encoder.encode(record)


def decode_schedule(data: bytes) -> ScheduleRecord:
    """A schedule record from JSON."""
    return _record_decoder.decode(data)


@dataclass(frozen=True)
class WorkflowSchedule:
    """A recurring schedule as ``list_schedules`` returns it."""

    schedule_id: str
    workflow_name: str
    cron: str | None
    """The six-field cron expression (seconds first, UTC), or None for an interval."""
    every: timedelta | None
    """The interval, or None for a cron expression."""
    overlap: Overlap
    paused: bool
    created_at: datetime
    serialized_input: str | None = None
    """The input each instance starts with, as JSON text (None: no input)."""
    last_instance_id: str | None = None
    """The instance the last firing started."""
    last_fired_at: datetime | None = None

    @classmethod
    def from_record(cls, record: ScheduleRecord) -> WorkflowSchedule:
        """The public view of a schedule record."""
        cron, every = describe_spec(record.schedule)
        data = bytes(record.input)
        return cls(
            schedule_id=record.schedule_id,
            workflow_name=record.workflow,
            cron=cron,
            every=every,
            overlap=check_overlap(record.overlap),
            paused=record.paused,
            created_at=record.created_at,
            serialized_input=None if data in (b"", b"null") else data.decode(),
            last_instance_id=record.last_instance_id or None,
            last_fired_at=record.last_fired_at,
        )
