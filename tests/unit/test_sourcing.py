"""The sourcing watchdog's decision, fed samples (no server)."""

from __future__ import annotations

from dataclasses import replace

from brokers._sourcing import SourceSample, SourcingWatchdog


def sample(at: float, **changes: object) -> SourceSample:
    """A healthy R3 sample at time ``at``; ``changes`` override fields."""
    base = SourceSample(
        at=at,
        leader="n1",
        replicas=3,
        history_last_seq=100,
        source_seq=90,
        source_lag=0,
        source_active=0.5,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


class TestSourcingWatchdog:
    """When the work stream's leader is asked to step down."""

    def test_a_source_heard_recently_is_left_alone(self) -> None:
        """A source with a fresh heartbeat never triggers a step-down, however far behind."""
        dog = SourcingWatchdog()
        assert [False, False] == [
            dog.should_step_down(sample(0.0, source_lag=500)),
            dog.should_step_down(sample(30.0, source_lag=500, source_active=1.0)),
        ]

    def test_a_silent_source_behind_the_history_triggers_a_step_down(self) -> None:
        """Silent for longer than the limit with history past its position: step down."""
        dog = SourcingWatchdog(silence_limit=8.0)
        assert dog.should_step_down(sample(10.0, source_active=9.0))

    def test_a_silent_source_with_nothing_to_deliver_is_left_alone(self) -> None:
        """Silence with the source at the history's end and no lag asks for nothing."""
        dog = SourcingWatchdog()
        assert not dog.should_step_down(
            sample(10.0, source_active=30.0, source_seq=100, history_last_seq=100)
        )

    def test_a_reported_lag_counts_as_behind(self) -> None:
        """A lag reported by the source counts even when the sequences look level."""
        dog = SourcingWatchdog()
        assert dog.should_step_down(
            sample(10.0, source_active=30.0, source_seq=100, history_last_seq=100, source_lag=3)
        )

    def test_a_never_heard_source_counts_silence_from_when_the_leader_was_seen(self) -> None:
        """With no activity reported since a new leader, silence runs from its first sample."""
        dog = SourcingWatchdog(silence_limit=8.0)
        assert [False, False, True] == [
            dog.should_step_down(sample(100.0, source_active=None)),
            dog.should_step_down(sample(107.0, source_active=None)),
            dog.should_step_down(sample(109.0, source_active=None)),
        ]

    def test_a_new_leader_restarts_the_silence_count(self) -> None:
        """After the leader changes, a source not heard yet gets a fresh limit."""
        dog = SourcingWatchdog(silence_limit=8.0)
        dog.should_step_down(sample(0.0, source_active=None))
        assert not dog.should_step_down(sample(20.0, leader="n2", source_active=None))

    def test_step_downs_are_spaced_by_the_cooldown(self) -> None:
        """A stalled source is stepped down once per cooldown, not at every check."""
        dog = SourcingWatchdog(silence_limit=8.0, cooldown=20.0)
        silent = {"source_active": 30.0}
        assert [True, False, True] == [
            dog.should_step_down(sample(10.0, **silent)),
            dog.should_step_down(sample(25.0, **silent)),
            dog.should_step_down(sample(31.0, **silent)),
        ]

    def test_unreplicated_or_leaderless_streams_are_left_alone(self) -> None:
        """A single-replica stream, or one without a leader right now, is never stepped down."""
        dog = SourcingWatchdog()
        assert [False, False] == [
            dog.should_step_down(sample(10.0, source_active=30.0, replicas=1)),
            dog.should_step_down(sample(20.0, source_active=30.0, leader="")),
        ]


class TestSourceSample:
    """A sample read from STREAM.INFO replies."""

    def test_fields_come_from_the_work_streams_source_and_the_historys_state(self) -> None:
        """Leader, replicas, the source's seq, lag and activity (ns), the history's last seq."""
        work = {
            "config": {"num_replicas": 3},
            "cluster": {"leader": "n2"},
            "sources": [
                {"name": "OTHER", "seq": 7, "lag": 1, "active": 1},
                {"name": "P_HISTORY", "seq": 40, "lag": 2, "active": 9_500_000_000},
            ],
        }
        history = {"state": {"last_seq": 55}}
        assert SourceSample(
            at=1.0, leader="n2", replicas=3, history_last_seq=55, source_seq=40, source_lag=2,
            source_active=9.5,
        ) == SourceSample.from_info(1.0, work, history, "P_HISTORY")

    def test_a_source_never_heard_has_no_activity(self) -> None:
        """``active: -1`` (never heard) becomes None; a missing source reads as empty."""
        work = {"config": {}, "sources": [{"name": "P_HISTORY", "active": -1}]}
        got = SourceSample.from_info(0.0, work, {"state": {}}, "P_HISTORY")
        assert (None, "", 1, 0) == (got.source_active, got.leader, got.replicas, got.source_seq)
