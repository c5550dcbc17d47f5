"""``jetloom watch``: follow one instance until it finishes, or every running instance.

Both read the instances bucket as it changes (no polling) until the instance finishes, a
timeout runs out or SIGINT/SIGTERM arrives.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from rich.live import Live
from rich.table import Table

from brokers import RecordWatch, stop_tasks
from engine import InstanceNotFoundError, WorkflowState, WorkflowStatus, stop_signal
from engine.cli.connecting import Session, session
from engine.cli.errors import CliError
from engine.cli.output import (
    STATE_ROW_HEADERS,
    Output,
    print_final,
    rich_state_row,
    rich_table,
    state_as_json,
    state_panel,
    time_text,
)
from engine.core.state import decode_record


def _watch_line(state: WorkflowState) -> str:
    return (
        f"{time_text(state.last_updated_at)}  {state.instance_id}  {state.name}  "
        f"{state.runtime_status.value}"
    )


class _Updates:
    """Reads updates until the deadline or a stop signal.

    The next-update task lives across calls, so giving up on a wait never drops an update.
    """

    def __init__(self, stop: asyncio.Event, timeout: float | None) -> None:
        loop = asyncio.get_running_loop()
        self._deadline = None if timeout is None else loop.time() + timeout
        self._stop = stop
        self._next: asyncio.Task[Any] | None = None

    async def next(self, update: Callable[[], Awaitable[Any]]) -> tuple[bool, Any]:
        """(True, what ``update()`` gave), or (False, None) once stopped or out of time."""
        if self._next is None:
            self._next = asyncio.ensure_future(update())
        stopper = asyncio.ensure_future(self._stop.wait())
        remaining = None
        if self._deadline is not None:
            remaining = max(0.0, self._deadline - asyncio.get_running_loop().time())
        try:
            await asyncio.wait(
                [self._next, stopper], timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stopper.cancel()
        if self._stop.is_set() or not self._next.done():
            return False, None
        task, self._next = self._next, None
        return True, task.result()

    async def close(self) -> None:
        if self._next is not None:  # the reader it drives stops before it is closed
            await stop_tasks([self._next])


@contextlib.asynccontextmanager
async def _updates(timeout: float | None) -> AsyncIterator[_Updates]:
    """Updates that stop after ``timeout`` seconds (None: never) or on SIGINT/SIGTERM."""
    with stop_signal() as stop:
        updates = _Updates(stop, timeout)
        try:
            yield updates
        finally:
            await updates.close()


def _record_state(value: bytes | None) -> WorkflowState | None:
    """The state in an instance record (None for a delete/purge)."""
    if not value:
        return None
    return WorkflowState.from_record(decode_record(value), fetch_payloads=True)


def _live(out: Output, args: argparse.Namespace) -> Live | None:
    """A live display that redraws in place, on a terminal without ``--json``."""
    return Live(console=out.console, auto_refresh=False) if out.rich and not args.json else None


async def _watch_instance(out: Output, opened: Session, args: argparse.Namespace) -> int:
    # The same watch a client's waits share: subscribed before the current record is read,
    # so no change between the two is missed.
    watch = RecordWatch(opened.broker)
    shown: tuple[object, ...] | None = None
    last: WorkflowState | None = None
    live = _live(out, args)
    try:
        async with watch.subscribe(args.instance_id) as changes:
            if changes.current is None:
                raise InstanceNotFoundError(
                    f"no instance {args.instance_id!r}; check the id (jetloom list shows instances)"
                )
            entry = changes.current
            async with _updates(None if args.once else args.timeout) as updates:
                if live is not None:
                    live.start()
                while True:
                    state = _record_state(entry.value)
                    if state is None:
                        raise CliError(f"instance {args.instance_id!r} was purged while watching")
                    key = (
                        state.runtime_status,
                        state.last_updated_at,
                        state.serialized_custom_status,
                    )
                    if key != shown:
                        shown, last = key, state
                        if args.json:
                            out.json(state_as_json(state), indent=None)
                        elif live is not None:
                            live.update(state_panel(state), refresh=True)
                        else:
                            out.plain(_watch_line(state))
                    if args.once or state.runtime_status.is_terminal:
                        break
                    ok, entry = await updates.next(changes.next)
                    if not ok:
                        break
    finally:
        if live is not None:
            live.stop()
        await watch.close()
    if last is None or not last.runtime_status.is_terminal:
        return 0
    if not args.json and live is None:
        print_final(out, last)
    return 0 if last.runtime_status is WorkflowStatus.COMPLETED else 1


def _running_table(running: dict[str, WorkflowState], finished: list[WorkflowState]) -> Table:
    states = sorted(running.values(), key=lambda s: (s.created_at, s.instance_id))
    return rich_table(
        STATE_ROW_HEADERS,
        [rich_state_row(s) for s in [*states, *finished[-10:]]],
        title=f"{len(running)} running (Ctrl-C stops)",
    )


async def _watch_all(out: Output, opened: Session, args: argparse.Namespace) -> int:
    records = opened.broker.read_records()
    running: dict[str, WorkflowState] = {}
    finished: list[WorkflowState] = []
    initial = True
    live = _live(out, args)
    try:
        async with _updates(args.timeout) as updates:
            if live is not None:
                live.start()
            while True:
                ok, entry = await updates.next(lambda: anext(records))
                if not ok:
                    break
                if entry is None:  # the current values are all delivered
                    initial = False
                    if live is not None:
                        live.update(_running_table(running, finished), refresh=True)
                    elif not running and not args.json and not args.once:
                        # Lines appear only as instances change: say that it is watching.
                        out.plain("no instance is running; watching for changes (Ctrl-C stops)")
                    if args.once:
                        break
                    continue
                if entry.value is None:  # purged
                    running.pop(entry.key, None)
                    continue
                state = WorkflowState.from_record(decode_record(entry.value), fetch_payloads=True)
                if state.runtime_status.is_terminal:
                    if running.pop(state.instance_id, None) is None or initial:
                        continue  # finished before the watch began: not running
                    finished.append(state)
                else:
                    running[state.instance_id] = state
                if args.json:
                    out.json(state_as_json(state), indent=None)
                elif live is None:
                    out.plain(_watch_line(state))
                elif not initial:
                    live.update(_running_table(running, finished), refresh=True)
    finally:
        if live is not None:
            live.stop()
        await records.aclose()
    return 0


async def cmd_watch(args: argparse.Namespace) -> int:
    out = Output(args)
    async with session(args) as opened:
        if args.instance_id is None:
            return await _watch_all(out, opened, args)
        return await _watch_instance(out, opened, args)
