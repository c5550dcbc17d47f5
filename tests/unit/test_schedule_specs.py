"""Recurring schedules without a server: specs, ticks and the ids of the instances they start."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from brokers import recurring_schedule_headers
from engine.core.events import ScheduledStart, decode_scheduled_start, encode
from engine.core.schedules import (
    Cron,
    ScheduleRecord,
    WorkflowSchedule,
    check_schedule_id,
    decode_schedule,
    describe_spec,
    encode_schedule,
    firing_instance_id,
    schedule_spec,
    tick_of,
)

MONDAY_9 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
AMSTERDAM = "Europe/Amsterdam"


class TestScheduleSpec:
    @pytest.mark.parametrize(
        ("cron", "spec"),
        [
            ("0 9 * * MON-FRI", "0 0 9 * * MON-FRI"),  # five fields: seconds are 0
            ("0 0 9 * * MON-FRI", "0 0 9 * * MON-FRI"),
            ("@daily", "0 0 0 * * *"),
            ("@Hourly", "0 0 * * * *"),
            ("*/15   * * * * *", "*/15 * * * * *"),
        ],
    )
    def test_cron_becomes_six_fields(self, cron: str, spec: str) -> None:
        """Five-field crontab, six-field (seconds first) and aliases all become what
        nats-server takes: six fields."""
        assert spec == schedule_spec(cron=cron)

    def test_interval_is_whole_seconds(self) -> None:
        """An interval is sent as ``@every <n>s``."""
        assert "@every 90s" == schedule_spec(every=timedelta(minutes=1, seconds=30))

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({}, "either a cron expression or an interval"),
            ({"cron": "* * * * *", "every": timedelta(seconds=1)}, "either"),
            ({"every": timedelta(milliseconds=500)}, "whole number of seconds"),
            ({"cron": "61 * * * *"}, "'61' is outside 0-59"),
            ({"cron": "* * *"}, "use five fields"),
            ({"cron": "0 0 9 * * FUN"}, "'FUN' is not a number or one of SUN"),
            ({"cron": "*/0 * * * *"}, "step '0' must be at least 1"),
        ],
    )
    def test_invalid_specs_are_refused_with_the_reason(
        self, kwargs: dict[str, object], message: str
    ) -> None:
        """A spec that cannot fire is refused before anything is stored."""
        with pytest.raises(ValueError, match=message):
            schedule_spec(**kwargs)  # type: ignore[arg-type]

    def test_describe_gives_back_cron_or_interval(self) -> None:
        """What list_schedules shows: the cron expression or the interval."""
        assert ("0 0 9 * * *", None) == describe_spec("0 0 9 * * *")
        assert (None, timedelta(seconds=90)) == describe_spec("@every 1m30s")


class TestTicks:
    def test_interval_tick_is_the_interval_before_the_next(self) -> None:
        """Each firing of ``@every`` says when the next one is: its own tick is before it."""
        assert MONDAY_9 - timedelta(seconds=5) == tick_of("@every 5s", MONDAY_9)

    @pytest.mark.parametrize(
        ("spec", "tick"),
        [
            ("0 0 9 * * MON-FRI", datetime(2026, 12, 4, 9, 0, tzinfo=UTC)),  # Friday
            ("0 0 0 * * *", datetime(2026, 12, 7, 0, 0, tzinfo=UTC)),
            ("*/2 * * * * *", datetime(2026, 12, 7, 8, 59, 58, tzinfo=UTC)),
            ("0 30 4 1,15 * 5", datetime(2026, 12, 4, 4, 30, tzinfo=UTC)),  # Friday or 1st/15th
            ("0 0 12 29 2 *", datetime(2024, 2, 29, 12, 0, tzinfo=UTC)),
        ],
    )
    def test_cron_tick_is_the_last_one_before_the_next(
        self, spec: str, tick: datetime
    ) -> None:
        """A cron firing's tick is the expression's last tick before ``Nats-Schedule-Next``."""
        assert tick == tick_of(spec, MONDAY_9)

    def test_weekday_seven_is_sunday(self) -> None:
        """crontab accepts 7 for Sunday, as 0."""
        assert Cron.parse("0 0 0 * * 7").weekdays == Cron.parse("0 0 0 * * SUN").weekdays

    def test_instance_id_is_the_schedule_and_the_tick(self) -> None:
        """The same firing always names the same instance; two ticks never do."""
        assert "nightly-20261207T090000Z" == firing_instance_id("nightly", MONDAY_9)

    def test_longest_schedule_id_leaves_a_valid_instance_id(self) -> None:
        """40 characters of schedule id plus the tick stay within 64."""
        longest = check_schedule_id("s" * 40)
        assert 64 >= len(firing_instance_id(longest, MONDAY_9))
        with pytest.raises(ValueError, match="1-40 letters"):
            check_schedule_id("s" * 41)


class TestTimeZones:
    def test_a_cron_takes_a_known_zone(self) -> None:
        """A cron expression in a time zone is sent as it is; the zone goes beside it."""
        assert "0 30 2 * * *" == schedule_spec(cron="30 2 * * *", time_zone=AMSTERDAM)

    @pytest.mark.parametrize(
        ("time_zone", "message"),
        [
            ("Europe/Amsterdm", "unknown time zone 'Europe/Amsterdm': did you mean "
             "'Europe/Amsterdam'"),
            ("Mars/Olympus", "unknown time zone 'Mars/Olympus': give an IANA time zone name"),
            ("", "unknown time zone ''"),
            ("../etc/passwd", "unknown time zone"),
        ],
    )
    def test_an_unknown_zone_is_refused_with_what_to_give(
        self, time_zone: str, message: str
    ) -> None:
        """A zone name zoneinfo does not know is refused, with close names when there are."""
        with pytest.raises(ValueError, match=message):
            schedule_spec(cron="0 9 * * *", time_zone=time_zone)

    def test_an_interval_takes_no_zone(self) -> None:
        """nats-server refuses a time zone on ``@every``: it is refused before, saying so."""
        with pytest.raises(ValueError, match="only cron schedules take a time zone"):
            schedule_spec(every=timedelta(minutes=5), time_zone=AMSTERDAM)

    def test_cron_fields_are_wall_clock_times_in_the_zone(self) -> None:
        """09:00 on weekdays in New York is 14:00 UTC in winter: the firing before Monday's
        is Friday's."""
        monday = datetime(2026, 12, 7, 14, 0, tzinfo=UTC)
        assert datetime(2026, 12, 4, 14, 0, tzinfo=UTC) == tick_of(
            "0 0 9 * * MON-FRI", monday, "America/New_York"
        )

    def test_next_as_the_server_writes_it_in_the_zone(self) -> None:
        """With a zone, ``Nats-Schedule-Next`` carries the zone's offset; the tick is the same
        instant as from its UTC form."""
        written = datetime.fromisoformat("2026-12-08T02:30:00+01:00")
        assert datetime(2026, 12, 7, 1, 30, tzinfo=UTC) == tick_of(
            "0 30 2 * * *", written, AMSTERDAM
        )

    def test_a_time_clocks_skip_is_no_tick(self) -> None:
        """On 29 March 2026 Amsterdam's clocks jump from 02:00 to 03:00: a 02:30 daily cron
        does not fire that day, so the firing after 28 March's is 30 March's."""
        next_after_30th = datetime.fromisoformat("2026-03-31T02:30:00+02:00")
        next_after_28th = datetime.fromisoformat("2026-03-30T02:30:00+02:00")
        assert [datetime(2026, 3, 30, 0, 30, tzinfo=UTC),  # 02:30 CEST
                datetime(2026, 3, 28, 1, 30, tzinfo=UTC)] == [  # 02:30 CET
            tick_of("0 30 2 * * *", next_after_30th, AMSTERDAM),
            tick_of("0 30 2 * * *", next_after_28th, AMSTERDAM),
        ]
        assert "nightly-20260328T013000Z" == firing_instance_id(
            "nightly", tick_of("0 30 2 * * *", next_after_28th, AMSTERDAM)
        )

    def test_a_time_clocks_repeat_is_two_ticks_with_two_ids(self) -> None:
        """On 25 October 2026 Amsterdam's clocks go back from 03:00 to 02:00: 02:30 comes
        twice, and the server fires twice; each firing names an instance of its own."""
        first, second = (
            tick_of("0 30 2 * * *", datetime.fromisoformat(next_at), AMSTERDAM)
            for next_at in ("2026-10-25T02:30:00+01:00", "2026-10-26T02:30:00+01:00")
        )
        assert ["nightly-20261025T003000Z", "nightly-20261025T013000Z"] == [
            firing_instance_id("nightly", first), firing_instance_id("nightly", second)
        ]

    @pytest.mark.parametrize(
        "start", [datetime(2026, 3, 28, 22, tzinfo=UTC), datetime(2026, 10, 24, 22, tzinfo=UTC)]
    )
    def test_every_tick_across_a_clock_change_follows_the_one_before(
        self, start: datetime
    ) -> None:
        """Every quarter hour from 01:00 to 03:45 local time, over a night clocks change: the
        tick before each is the one before it in time, found from anywhere up to it."""
        zone = ZoneInfo(AMSTERDAM)
        instants = (start + timedelta(minutes=15 * n) for n in range(6 * 4))
        ticks = [t for t in instants if 1 <= t.astimezone(zone).hour <= 3]
        cron = Cron.parse("0 */15 1-3 * * *")
        for earlier, later in itertools.pairwise(ticks):
            assert [earlier] * 3 == [
                cron.previous(later, zone),
                cron.previous(earlier + timedelta(seconds=1), zone),
                cron.previous(earlier + timedelta(microseconds=1), zone),
            ]


class TestScheduleRecords:
    def test_a_record_without_a_zone_is_as_before(self) -> None:
        """A UTC schedule's record has no time_zone key, and an old record reads as UTC."""
        record = ScheduleRecord("s", "report", "0 0 2 * * *", created_at=MONDAY_9)
        shown = WorkflowSchedule.from_record(decode_schedule(encode_schedule(record)))
        assert b"time_zone" not in encode_schedule(record)
        assert shown.time_zone is None

    def test_a_zone_is_kept_and_shown(self) -> None:
        """A schedule's zone survives its record and shows in the public view."""
        record = ScheduleRecord(
            "s", "report", "0 0 2 * * *", created_at=MONDAY_9, time_zone=AMSTERDAM
        )
        shown = WorkflowSchedule.from_record(decode_schedule(encode_schedule(record)))
        assert ("0 0 2 * * *", AMSTERDAM) == (shown.cron, shown.time_zone)

    def test_the_firing_body_carries_the_zone_only_when_there_is_one(self) -> None:
        """The body the server fires names the zone a worker reads the tick in; a UTC
        schedule's body is unchanged."""
        assert b'{"schedule_id":"s","schedule":"0 0 2 * * *"}' == encode(
            ScheduledStart("s", "0 0 2 * * *")
        )
        zoned = encode(ScheduledStart("s", "0 0 2 * * *", AMSTERDAM))
        assert AMSTERDAM == decode_scheduled_start(zoned).time_zone

    def test_the_zone_header_goes_with_the_schedule(self) -> None:
        """``Nats-Schedule-Time-Zone`` is set only for a schedule with a zone."""
        assert AMSTERDAM == recurring_schedule_headers(
            "0 0 2 * * *", "t", "24h", AMSTERDAM
        )["Nats-Schedule-Time-Zone"]
        assert "Nats-Schedule-Time-Zone" not in recurring_schedule_headers(
            "0 0 2 * * *", "t", "24h"
        )
