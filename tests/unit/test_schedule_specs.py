"""Recurring schedules without a server: specs, ticks and the ids of the instances they start."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from engine.core.schedules import (
    Cron,
    check_schedule_id,
    describe_spec,
    firing_instance_id,
    schedule_spec,
    tick_of,
)

MONDAY_9 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


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
