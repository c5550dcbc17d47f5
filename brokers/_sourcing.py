"""A watchdog for the sourcing of dispatches from ``<P>_HISTORY`` into ``<P>_WORK``.

On a cluster, after the work stream's leader changes, its source from the history stream can
stall without an error: the source reports no activity, dispatches pile up in the history stream
and never reach a worker. The stream's leader restarts sourcing when it takes over, so the cure
is a leader step-down of the work stream (``$JS.API.STREAM.LEADER.STEPDOWN.<P>_WORK``).

``SourcingWatchdog`` is the decision, free of I/O: fed ``SourceSample``s (what
``STREAM.INFO`` of both streams says), it answers whether to ask for a step-down: when the
source has been silent (no message nor heartbeat) for longer than ``silence_limit`` while the
history stream holds messages past the source's position. ``watch_sourcing`` runs it against
a server, only for replicated work streams (a single server restarts sourcing by itself).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from brokers._tasks import raise_if_cancelling

log = structlog.get_logger("jetloom.sourcing")

SILENCE_LIMIT = 8.0
"""Seconds without a message or heartbeat from the source before it counts as stalled (the
server's source heartbeat is about one second)."""
COOLDOWN = 20.0
"""Seconds after a step-down before the watchdog may ask for another one."""


@dataclass(frozen=True)
class SourceSample:
    """One look at the work stream's source from the history stream."""

    at: float
    """When the sample was taken (monotonic seconds)."""
    leader: str
    """The work stream's current leader (a new leader restarts sourcing)."""
    replicas: int
    """The work stream's replicas."""
    history_last_seq: int
    """The last sequence stored in the history stream."""
    source_seq: int
    """The last history sequence the source has delivered (0: none yet)."""
    source_lag: int
    """Messages the source reports it is behind."""
    source_active: float | None
    """Seconds since the source was last heard from; None if never (since this leader)."""

    @classmethod
    def from_info(cls, at: float, work_info: dict[str, Any], history_info: dict[str, Any],
                  history_stream: str) -> SourceSample:
        """A sample from the ``STREAM.INFO`` replies of the work and history streams."""
        source: dict[str, Any] = next(
            (s for s in work_info.get("sources") or [] if s.get("name") == history_stream), {}
        )
        active_ns = source.get("active", -1)
        return cls(
            at=at,
            leader=str((work_info.get("cluster") or {}).get("leader") or ""),
            replicas=int(work_info["config"].get("num_replicas") or 1),
            history_last_seq=int(history_info["state"].get("last_seq") or 0),
            source_seq=int(source.get("seq") or 0),
            source_lag=int(source.get("lag") or 0),
            source_active=None if active_ns is None or active_ns < 0 else active_ns / 1e9,
        )


class SourcingWatchdog:
    """Decides, sample by sample, when the work stream's leader should step down."""

    def __init__(self, silence_limit: float = SILENCE_LIMIT, cooldown: float = COOLDOWN) -> None:
        self.silence_limit = silence_limit
        self.cooldown = cooldown
        self._leader: str | None = None
        self._leader_seen_at = 0.0
        self._stepped_down_at: float | None = None

    def silent_for(self, sample: SourceSample) -> float:
        """How long the source has been silent, as far as this watchdog can tell."""
        since_leader = sample.at - self._leader_seen_at
        if sample.source_active is None:  # never heard since this leader: since we saw it
            return since_leader
        return sample.source_active

    def should_step_down(self, sample: SourceSample) -> bool:
        """True when the source looks stalled and a step-down is due (then it is recorded)."""
        if sample.leader != self._leader:
            self._leader, self._leader_seen_at = sample.leader, sample.at
        if sample.replicas <= 1 or not sample.leader:
            return False
        if self.silent_for(sample) <= self.silence_limit:
            return False
        behind = sample.source_lag > 0 or sample.history_last_seq > sample.source_seq
        if not behind:
            return False  # silent but nothing to deliver: no hurry
        if self._stepped_down_at is not None and sample.at - self._stepped_down_at < self.cooldown:
            return False
        self._stepped_down_at = sample.at
        return True


async def watch_sourcing(
    api: Callable[[str, dict[str, Any] | None], Awaitable[dict[str, Any]]],
    work_stream: str,
    history_stream: str,
    *,
    interval: float = 2.0,
    watchdog: SourcingWatchdog | None = None,
) -> None:
    """Check the work stream's source every ``interval`` seconds (jittered) until cancelled;
    ask its leader to step down when ``SourcingWatchdog`` says the source stalled.

    ``api(path, body)`` makes a JetStream API request (``$JS.API.<path>``) and returns the
    reply. Errors (a server away, no permission) are logged and the next check goes on; an
    unreplicated work stream is checked only every 15 intervals, in case its replicas are
    raised.
    """
    watchdog = watchdog or SourcingWatchdog()
    while True:
        pause = interval
        try:
            work = await api(f"STREAM.INFO.{work_stream}", None)
            if int(work["config"].get("num_replicas") or 1) <= 1:
                pause = 15 * interval
            else:
                history = await api(f"STREAM.INFO.{history_stream}", None)
                sample = SourceSample.from_info(time.monotonic(), work, history, history_stream)
                if watchdog.should_step_down(sample):
                    log.warning(
                        "sourcing.stalled",
                        stream=work_stream,
                        leader=sample.leader,
                        silent_s=round(watchdog.silent_for(sample), 1),
                        source_seq=sample.source_seq,
                        history_last_seq=sample.history_last_seq,
                        lag=sample.source_lag,
                    )
                    await api(f"STREAM.LEADER.STEPDOWN.{work_stream}", None)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.debug("sourcing.check_failed", stream=work_stream, error=repr(exc))
        raise_if_cancelling()
        await asyncio.sleep(pause * (0.75 + random.random() / 2))
