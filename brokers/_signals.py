"""Messages beside the histories that are not work: requests to stop activities (listened to
live, and looked up by workers that were not listening) and recurring schedules (message
schedules that nats-server fires by itself) with the KV bucket describing them.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Awaitable, Callable

import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.kv import KeyValue

from brokers._errors import JetStreamError, api_error, retry_transient
from brokers._subjects import recurring_schedule_headers
from brokers._topology import BrokerBase

ERR_INVALID_SCHEDULE = 10189
"""The server refused a ``Nats-Schedule`` value."""
ERR_INVALID_SCHEDULE_TIME_ZONE = 10223
"""The server refused a ``Nats-Schedule-Time-Zone`` value (a zone it does not know)."""
SCHEDULE_TIME_ZONES_SINCE = (2, 14)
"""The first nats-server release that reads ``Nats-Schedule-Time-Zone`` (older ones ignore
it, and would fire a cron in UTC)."""


class CancelListener:
    """A subscription to every instance's cancel requests.

    A core subscription hears a request only while connected. ``heard_since`` is the last
    work-stream sequence stored before it last started hearing everything (its start, or the
    last reconnection): a cancel request for a task stored up to there may have gone unheard,
    and must be looked up; one for a later task was heard (it is sent after the task).
    """

    def __init__(
        self, nc: NATS, subscription: Subscription, last_work_seq: Callable[[], Awaitable[int]]
    ) -> None:
        self._nc = nc
        self._subscription = subscription
        self._last_work_seq = last_work_seq
        self._reconnects = -1
        self._since = 0

    async def heard_since(self) -> int:
        """The work-stream sequence after which every task's cancel requests were heard."""
        reconnects = int(self._nc.stats.get("reconnects", 0))
        if reconnects != self._reconnects:
            # Subscribed (again) first, then read: a task stored in between is looked up.
            self._reconnects, self._since = reconnects, await self._last_work_seq()
        return self._since

    async def stop(self) -> None:
        """Stop listening."""
        with contextlib.suppress(Exception):
            await self._subscription.unsubscribe()


class SignalStore(BrokerBase):
    """Cancel requests and recurring schedules."""

    _schedules_kv: KeyValue | None
    outbox_ttl: str

    # ------------------------------------------------------------------ cancels

    async def listen_for_cancels(self, handler: Callable[[bytes], None]) -> CancelListener:
        """Call ``handler`` with the body of every cancel request published from now on."""

        async def deliver(msg: Msg) -> None:
            handler(msg.data)

        subscription = await self.nc.subscribe(self.subjects.cancels, cb=deliver)

        async def last_work_seq() -> int:
            info = await self._api(f"STREAM.INFO.{self.subjects.work_stream}", None)
            return int(info["state"].get("last_seq") or 0)

        listener = CancelListener(self.nc, subscription, last_work_seq)
        await listener.heard_since()
        return listener

    async def last_cancel(self, instance_id: str) -> bytes | None:
        """The last cancel request stored for an instance (None: none in the last day)."""

        async def read() -> bytes | None:
            reply = await self._api(
                f"STREAM.MSG.GET.{self.subjects.history_stream}",
                {"last_by_subj": self.subjects.cancel(instance_id)},
                allow_error=True,
            )
            error = reply.get("error")
            if error:
                if error.get("code") == 404:
                    return None
                raise api_error(error)
            return base64.b64decode(reply["message"].get("data") or "")

        return await retry_transient(read)

    # ------------------------------------------------------------------ schedules

    async def schedules(self) -> KeyValue:
        """The schedules KV bucket, created on first use."""
        if self._schedules_kv is None:
            self._schedules_kv = await self._bucket(self.subjects.schedules_bucket)
        return self._schedules_kv

    async def get_schedule(self, schedule_id: str) -> tuple[bytes, int] | None:
        """A schedule's record and its revision, or None."""
        kv = await self.schedules()
        try:
            entry = await kv.get(schedule_id)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return None
        if entry.value is None or entry.revision is None:
            return None
        return entry.value, int(entry.revision)

    async def put_schedule(self, schedule_id: str, value: bytes, revision: int | None) -> bool:
        """Write a schedule's record if it is still as read: absent (``revision`` None) or
        at ``revision``. False if it changed in between."""
        kv = await self.schedules()
        try:
            if revision is None:
                await kv.create(schedule_id, value)
            else:
                await kv.update(schedule_id, value, last=revision)
        except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.BadRequestError):
            return False
        return True

    async def delete_schedule(self, schedule_id: str) -> None:
        """Remove a schedule's record (its marker expires like an instance's)."""
        await self.purge_key(await self.schedules(), schedule_id)

    async def list_schedules(self) -> list[bytes]:
        """Every schedule's record."""
        kv = await self.schedules()
        try:
            keys = await kv.keys()
        except nats.js.errors.NoKeysError:
            return []
        values = []
        for key in keys:
            stored = await self.get_schedule(key)
            if stored is not None:
                values.append(stored[0])
        return values

    async def put_schedule_message(
        self, schedule_id: str, body: bytes, schedule: str, target: str,
        time_zone: str | None = None,
    ) -> None:
        """Store (or replace) the message schedule of ``schedule_id``: the server publishes
        ``body`` to ``target`` on every tick of ``schedule`` (a cron read in ``time_zone``
        when given).

        Raises:
            ValueError: the server does not accept ``schedule`` or ``time_zone``, or is too old
                to read a time zone.
        """
        if time_zone is not None:
            self._check_time_zones_supported(time_zone)
        headers = recurring_schedule_headers(schedule, target, self.outbox_ttl, time_zone)
        try:
            await self.js.publish(
                self.subjects.schedule(schedule_id), body, headers=headers, timeout=10
            )
        except nats.js.errors.APIError as exc:
            if exc.err_code == ERR_INVALID_SCHEDULE:
                raise ValueError(
                    f"nats-server refused the schedule {schedule!r}: {exc.description}"
                ) from None
            if exc.err_code == ERR_INVALID_SCHEDULE_TIME_ZONE:
                raise ValueError(
                    f"nats-server refused the time zone {time_zone!r}: {exc.description}; "
                    "give a zone the server's time zone database knows, or none (UTC)"
                ) from None
            raise JetStreamError(int(exc.err_code or 0), str(exc.description)) from exc

    def _check_time_zones_supported(self, time_zone: str) -> None:
        """Refuse a time zone the connected server would ignore (before 2.14).

        Raises:
            ValueError: the server is older than 2.14.
        """
        version = self.nc.connected_server_version
        major_minor = (version.major, version.minor)
        if (0, 0) < major_minor < SCHEDULE_TIME_ZONES_SINCE:  # (0, 0): not known
            found = f"{version.major}.{version.minor}.{version.patch}"
            raise ValueError(
                f"nats-server {found} ignores the time zone {time_zone!r} of a schedule (time "
                "zones need nats-server 2.14 or newer); upgrade the server, or give the cron "
                "expression in UTC"
            )

    async def remove_schedule_message(self, schedule_id: str) -> None:
        """Remove the message schedule of ``schedule_id``: it fires no more."""
        await self._api(
            f"STREAM.PURGE.{self.subjects.history_stream}",
            {"filter": self.subjects.schedule(schedule_id)},
        )
