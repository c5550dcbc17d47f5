"""Recurring schedules: their specification, their record, and the tick of each firing (pure).

A schedule is a message schedule (ADR-51) kept by nats-server itself, so it fires with no
jetloom process running. Its ``Nats-Schedule`` value is a six-field cron expression (seconds
first) or ``@every <duration>``; a cron expression is read in UTC, or in the IANA time zone of
its ``Nats-Schedule-Time-Zone`` (nats-server 2.14+, cron only). Every firing carries
``Nats-Schedule-Next`` (the following tick), from which the tick of the firing itself is
derived, and so the id of the instance it starts: the same firing always yields the same id,
two ticks never do.
"""

from __future__ import annotations

import difflib
import re
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
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
_CLOCKS_BACK_WITHIN = 26
"""Hours before an instant within which clocks set back may have repeated its wall-clock time
(they go back by an hour or two, never twice within an hour)."""


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


def check_time_zone(time_zone: str) -> str:
    """Return ``time_zone`` if it is an IANA time zone name known here (``Europe/Amsterdam``).

    Raises:
        ValueError: an unknown name, with the closest known ones.
    """
    try:
        zoneinfo.ZoneInfo(time_zone)
    except (ValueError, KeyError, OSError, TypeError):
        close = difflib.get_close_matches(str(time_zone), zoneinfo.available_timezones(), n=3)
        hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
        raise ValueError(
            f"unknown time zone {time_zone!r}: {hint}give an IANA time zone name such as "
            "'Europe/Amsterdam' or 'America/New_York'"
        ) from None
    return time_zone


def zone_of(time_zone: str | None) -> tzinfo:
    """The ``tzinfo`` of a schedule's time zone name (None: UTC)."""
    return UTC if time_zone is None else zoneinfo.ZoneInfo(time_zone)


def schedule_spec(
    *, cron: str | None = None, every: timedelta | None = None, time_zone: str | None = None
) -> str:
    """The ``Nats-Schedule`` value of a schedule given as a cron expression or an interval.

    ``cron`` takes six fields (seconds first, as nats-server does), five (minutes first, the
    classic crontab: the seconds are 0) or an alias such as ``@daily``; times are UTC, or
    wall-clock times in ``time_zone`` (an IANA name) when given. ``every`` is a whole number of
    seconds, at least one, and takes no time zone.

    Raises:
        ValueError: neither or both given, one that is not valid, an unknown time zone, or a
            time zone with an interval.
    """
    if (cron is None) == (every is None):
        raise ValueError("give a schedule either a cron expression or an interval (every=)")
    if time_zone is not None:
        check_time_zone(time_zone)
        if every is not None:
            raise ValueError(
                f"time zone {time_zone!r} with an interval (every=): only cron schedules take "
                "a time zone (an interval is the same in every zone); drop the time zone, or "
                "give a cron expression"
            )
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


def tick_of(spec: str, next_at: datetime, time_zone: str | None = None) -> datetime:
    """The tick of a firing whose ``Nats-Schedule-Next`` is ``next_at``: the interval before
    it, or the cron's last tick before it, its fields read in ``time_zone`` (None: UTC)."""
    cron, every = describe_spec(spec)
    if every is not None:
        return next_at - every
    assert cron is not None
    return Cron.parse(cron).previous(next_at, zone_of(time_zone))


def firing_instance_id(schedule_id: str, tick: datetime) -> str:
    """The id of the instance the firing at ``tick`` starts: ``<schedule id>-<tick>``, the tick
    in UTC whatever the schedule's time zone (a wall-clock time repeated when clocks go back
    is two ticks, two ids)."""
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
    """A six-field cron expression (second minute hour day-of-month month day-of-week), whose
    fields are wall-clock times in the zone its ticks are looked up in."""

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

    def previous(self, before: datetime, zone: tzinfo = UTC) -> datetime:
        """The last tick strictly before ``before`` (in UTC), the fields read as wall-clock
        times in ``zone``.

        As nats-server fires them: a wall-clock time that clocks skip (spring forward) is no
        tick, and one they repeat (fall back) is two.

        Raises:
            ValueError: none within the last years (an expression that never fires).
        """
        # A wall-clock time is one instant, none (skipped) or two (repeated: fold 0 and 1).
        # Read with one fold, later wall-clock times are later instants, so each fold's first
        # hit going down is its latest, and the later of the two wins. Read with fold 1, no
        # wall-clock time after ``before``'s own is earlier than it; read with fold 0, one up to
        # the time clocks were set back lately may be.
        own = before.astimezone(zone).replace(tzinfo=None)
        starts = {0: _latest_wall_time(before, zone), 1: own}
        latest: dict[int, datetime] = {}
        for candidate in self._wall_times_down_from(max(starts.values())):
            for fold, start in starts.items():
                if fold in latest or candidate > start:
                    continue
                instant = _instant(candidate, zone, fold)
                if instant is not None and instant < before:
                    latest[fold] = instant
            if len(latest) == 2:
                return max(latest.values())
        raise ValueError("the cron expression has no tick in the past years")

    def _wall_times_down_from(self, start: datetime) -> Iterator[datetime]:
        """The wall-clock times (naive) the expression fires at, from ``start`` (whole
        seconds, inclusive) down, over the last years."""
        day = start.date()
        limit: int | None = start.hour * 3600 + start.minute * 60 + start.second + 1
        for _ in range(366 * _CRON_YEARS_BACK):
            if self.matches_day(day):
                midnight = datetime(day.year, day.month, day.day)
                for second_of_day in self._times_below(limit):
                    yield midnight + timedelta(seconds=second_of_day)
            day -= timedelta(days=1)
            limit = None

    def _times_below(self, limit: int | None) -> Iterator[int]:
        """The seconds of a day that the expression fires at, below ``limit``, latest first."""
        for hour in reversed(self.hours):
            for minute in reversed(self.minutes):
                base = hour * 3600 + minute * 60
                if limit is not None and base >= limit:
                    continue
                for second in reversed(self.seconds):
                    if limit is None or base + second < limit:
                        yield base + second


def _instant(wall: datetime, zone: tzinfo, fold: int) -> datetime | None:
    """The instant (UTC) of the naive wall-clock time ``wall`` in ``zone`` read with ``fold``,
    or None if clocks skipped it."""
    instant = wall.replace(tzinfo=zone, fold=fold).astimezone(UTC)
    if instant.astimezone(zone).replace(tzinfo=None) != wall:
        return None
    return instant


def _latest_wall_time(before: datetime, zone: tzinfo) -> datetime:
    """The latest wall-clock time (naive) in ``zone`` of an instant before ``before``: its
    own, or, while clocks set back lately repeat it, the one reached just before the change."""
    latest = before.astimezone(zone).replace(tzinfo=None)
    if zone is UTC:
        return latest
    later, later_offset = before, _offset(before, zone)
    for hours in range(1, _CLOCKS_BACK_WITHIN + 1):
        earlier = before - timedelta(hours=hours)
        earlier_offset = _offset(earlier, zone)
        if earlier_offset > later_offset:  # clocks went back in between
            change = _clock_change(earlier, later, zone)
            latest = max(latest, change.astimezone(UTC).replace(tzinfo=None) + earlier_offset)
        later, later_offset = earlier, earlier_offset
    return latest


def _clock_change(earlier: datetime, later: datetime, zone: tzinfo) -> datetime:
    """The first instant (within a second) after ``earlier`` with ``later``'s offset, the
    offsets of ``zone`` at the two being different."""
    earlier_offset = _offset(earlier, zone)
    while later - earlier > timedelta(seconds=1):
        middle = earlier + (later - earlier) / 2
        if _offset(middle, zone) == earlier_offset:
            earlier = middle
        else:
            later = middle
    return later


def _offset(instant: datetime, zone: tzinfo) -> timedelta:
    """The UTC offset of ``zone`` at ``instant``."""
    return instant.astimezone(zone).utcoffset() or timedelta(0)


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
    time_zone: str | None = None
    """The IANA time zone a cron expression is read in (None: UTC)."""
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
    """The six-field cron expression (seconds first, in ``time_zone``), or None for an
    interval."""
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
    time_zone: str | None = None
    """The IANA time zone of the cron expression (None: UTC)."""

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
            time_zone=record.time_zone,
        )
