"""The commands on instances: ``start``, ``status``, ``history``, ``raise``, ``terminate``,
``pause``, ``resume``, ``purge``, ``rerun`` and ``list``."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from rich.text import Text

from brokers import JetStreamBroker, RecordWatch
from engine import (
    InstanceFinishedError,
    InstanceNotFoundError,
    WorkflowClient,
    WorkflowState,
    WorkflowStatus,
)
from engine.cli.connecting import Session, connected, session
from engine.cli.errors import CliError
from engine.cli.history import (
    HEADERS,
    history_as_json,
    history_rows,
    history_table,
    plain_history_rows,
)
from engine.cli.options import parse_json_option
from engine.cli.output import (
    STATE_ROW_HEADERS,
    Output,
    plain_table,
    print_final,
    rich_state_row,
    rich_table,
    state_as_json,
    state_lines,
    state_panel,
    state_row,
)
from engine.core.state import decode_record

LIST_DEFAULT_PAGE_SIZE = 20
"""Instances per page of ``list --page`` without ``--limit``."""


async def cmd_start(args: argparse.Namespace) -> int:
    workflow_input = parse_json_option("--input", args.input)
    async with session(args) as opened:
        instance_id = await opened.client.schedule_new_workflow(
            args.workflow, input=workflow_input, instance_id=args.id
        )
        return await _started(args, opened, instance_id, args.workflow)


async def cmd_rerun(args: argparse.Namespace) -> int:
    overwrite = args.input is not None
    activity_input = parse_json_option("--input", args.input)
    async with session(args) as opened:
        try:
            instance_id = await opened.client.rerun_workflow_from_event(
                args.instance_id, args.from_event, new_instance_id=args.id,
                input=activity_input, overwrite_input=overwrite,
            )
        except ValueError as exc:
            raise CliError(str(exc)) from None
        state = await opened.client.get_workflow_state(instance_id, fetch_payloads=False)
        return await _started(args, opened, instance_id, state.name if state else "")


async def _started(args: argparse.Namespace, opened: Session, instance_id: str, workflow: str
                   ) -> int:
    """Print a new instance's id and, with ``--wait``, how it ended (the exit code: 0 only if
    it completed)."""
    out = Output(args)
    if not args.json:
        out.plain(instance_id)
    if not args.wait:
        if args.json:
            out.json({"instance_id": instance_id})
        return 0
    try:
        async with asyncio.timeout(args.timeout):
            await _wait_for_outcome(opened.broker, instance_id)
    except TimeoutError:
        raise CliError(
            f"instance {instance_id!r} did not finish within {args.timeout:g}s; it keeps "
            f"running (jetloom status {instance_id}); is a worker hosting "
            f"{workflow!r} on prefix {args.prefix!r}?"
        ) from None
    state = await _existing_state(opened.client, instance_id)
    if args.json:
        out.json(state_as_json(state))
    else:
        print_final(out, state)
        if state.runtime_status is WorkflowStatus.STALLED:
            out.plain(
                f"it is retried in the background; fix the cause, or end it with "
                f"jetloom terminate {instance_id}"
            )
    return 0 if state.runtime_status is WorkflowStatus.COMPLETED else 1


def _finished_or_stalled(value: bytes) -> bool:
    status = WorkflowStatus(decode_record(value).status)
    return status.is_terminal or status is WorkflowStatus.STALLED


async def _wait_for_outcome(broker: JetStreamBroker, instance_id: str) -> None:
    """Wait (by watching its record) until the instance has finished, or is STALLED: a start
    no worker can run (a typo in the workflow's name, say) stalls, and stays so."""
    watch = RecordWatch(broker)
    try:
        async with watch.subscribe(instance_id, accept=_finished_or_stalled) as changes:
            entry = changes.current
            while entry is None or entry.value is None or not _finished_or_stalled(entry.value):
                entry = await changes.next()
                if entry.value is None:
                    raise CliError(f"instance {instance_id!r} was purged while waiting for it")
    finally:
        await watch.close()


async def _existing_state(client: WorkflowClient, instance_id: str) -> WorkflowState:
    state = await client.get_workflow_state(instance_id)
    if state is None:
        raise InstanceNotFoundError(
            f"no instance {instance_id!r}; check the id (jetloom list shows instances)"
        )
    return state


async def cmd_status(args: argparse.Namespace) -> int:
    out = Output(args)
    async with connected(args) as client:
        state = await _existing_state(client, args.instance_id)
    if args.json:
        out.json(state_as_json(state))
    elif out.rich:
        out.show(state_panel(state))
    else:
        out.plain("\n".join(state_lines(state)))
    return 0


async def cmd_history(args: argparse.Namespace) -> int:
    out = Output(args)
    async with connected(args) as client:
        state = await _existing_state(client, args.instance_id)
        events = await client.get_history(args.instance_id)
    if not events and not args.json:
        out.plain(
            f"{args.instance_id} has no history yet ({state.runtime_status.value}); "
            f"jetloom status {args.instance_id} shows why"
        )
        return 0
    rows = history_rows(events)
    if args.json:
        out.json(history_as_json(rows))
    elif out.rich:
        out.show(history_table(rows, args.instance_id))
    else:
        out.plain(plain_table(HEADERS, plain_history_rows(rows)))
    return 0


# -------------------------------------------------------------------- steering


async def _steer(
    args: argparse.Namespace,
    verb: str,
    action: Callable[[WorkflowClient], Awaitable[object]],
) -> int:
    """Run a steering action; the client refuses unknown and finished instances."""
    async with connected(args) as client:
        try:
            await action(client)
        except InstanceFinishedError as exc:
            raise CliError(
                f"instance {args.instance_id!r} is already {exc.status}; there is nothing to {verb}"
            ) from None
    return 0


def _report(args: argparse.Namespace, message: str, **fields: Any) -> None:
    """What a steering command did: one line, or a JSON object with ``--json``."""
    out = Output(args)
    if args.json:
        out.json({"instance_id": args.instance_id, **fields})
    elif out.rich:
        out.show(Text(message, style="green"))
    else:
        out.plain(message)


async def cmd_raise(args: argparse.Namespace) -> int:
    data = parse_json_option("--data", args.data)
    await _steer(
        args,
        "raise an event to",
        lambda c: c.raise_workflow_event(args.instance_id, args.event, data=data),
    )
    _report(
        args,
        f"raised event {args.event!r} to {args.instance_id}",
        action="raise",
        event=args.event,
        data=data,
    )
    return 0


async def cmd_terminate(args: argparse.Namespace) -> int:
    output = parse_json_option("--output", args.output)
    await _steer(
        args,
        "terminate",
        lambda c: c.terminate_workflow(args.instance_id, output=output, recursive=args.recursive),
    )
    _report(
        args,
        f"terminating {args.instance_id}",
        action="terminate",
        output=output,
        recursive=args.recursive,
    )
    return 0


async def cmd_pause(args: argparse.Namespace) -> int:
    await _steer(args, "pause", lambda c: c.pause_workflow(args.instance_id))
    _report(args, f"pausing {args.instance_id}", action="pause")
    return 0


async def cmd_resume(args: argparse.Namespace) -> int:
    await _steer(args, "resume", lambda c: c.resume_workflow(args.instance_id))
    _report(args, f"resuming {args.instance_id}", action="resume")
    return 0


async def cmd_purge(args: argparse.Namespace) -> int:
    async with connected(args) as client:
        try:
            purged = await client.purge_workflow(args.instance_id)
        except InstanceNotFoundError:
            raise InstanceNotFoundError(
                f"no instance {args.instance_id!r} to purge; check the id "
                "(jetloom list shows instances)"
            ) from None
    _report(
        args,
        f"purged {args.instance_id} ({purged} instance{'s' if purged != 1 else ''})",
        action="purge",
        purged=purged,
    )
    return 0


# --------------------------------------------------------------------- listing


def _page_bounds(args: argparse.Namespace) -> tuple[int, int | None]:
    """(offset, limit) from ``--offset/--limit`` or ``--page`` (1-based, ``--limit`` per page)."""
    if args.page is not None:
        size = args.limit if args.limit is not None else LIST_DEFAULT_PAGE_SIZE
        return (args.page - 1) * size, size
    return args.offset or 0, args.limit


def _page_footer(offset: int, limit: int | None, shown: int, total: int) -> str:
    """Which instances a partial page shows and how to get the next ones ("" if all)."""
    if shown == total:
        return ""
    footer = f"instances {offset + 1}-{offset + shown} of {total}"
    if offset + shown < total:
        footer += f"; next: --offset {offset + shown}" + (
            f" --limit {limit}" if limit is not None else ""
        )
    return footer


async def cmd_list(args: argparse.Namespace) -> int:
    out = Output(args)
    statuses = set(args.status or [])
    async with connected(args) as client:
        states = [
            s
            async for s in client.list_workflows(workflow_name=args.workflow)
            if not statuses or s.runtime_status in statuses
        ]
    states.sort(key=lambda s: (s.created_at, s.instance_id), reverse=args.newest_first)
    offset, limit = _page_bounds(args)
    page = states[offset : None if limit is None else offset + limit]
    if args.json:
        out.json([state_as_json(s) for s in page])
        return 0
    if not page:
        out.plain("no instances" if not states else f"no instances on this page ({len(states)})")
        return 0
    footer = _page_footer(offset, limit, len(page), len(states))
    if out.rich:
        table = rich_table(STATE_ROW_HEADERS, [rich_state_row(s) for s in page])
        if footer:
            table.caption = footer
        out.show(table)
        return 0
    out.plain(plain_table(STATE_ROW_HEADERS, [state_row(s) for s in page]))
    if footer:
        out.plain(footer)
    return 0
