"""``jetloom schedule create|list|pause|resume|delete``: recurring schedules, fired by
nats-server itself."""

from __future__ import annotations

import argparse
from typing import Any

from engine import WorkflowSchedule
from engine.cli.connecting import connected
from engine.cli.errors import CliError
from engine.cli.options import parse_json_option
from engine.cli.output import Output, plain_table, rich_table
from engine.core.schedules import parse_interval

_HEADERS = ["schedule", "workflow", "when", "overlap", "state", "last instance"]


def _when(schedule: WorkflowSchedule) -> str:
    if schedule.every is not None:
        return f"every {int(schedule.every.total_seconds())}s"
    return f"cron {schedule.cron} {schedule.time_zone or 'UTC'}"


def schedule_as_json(schedule: WorkflowSchedule) -> dict[str, Any]:
    """A schedule as ``schedule list --json`` prints it."""
    return {
        "schedule_id": schedule.schedule_id,
        "workflow": schedule.workflow_name,
        "cron": schedule.cron,
        "time_zone": schedule.time_zone,
        "every_s": None if schedule.every is None else schedule.every.total_seconds(),
        "input": schedule.serialized_input,
        "overlap": schedule.overlap,
        "paused": schedule.paused,
        "created_at": schedule.created_at.isoformat(),
        "last_instance_id": schedule.last_instance_id,
        "last_fired_at": None if schedule.last_fired_at is None
        else schedule.last_fired_at.isoformat(),
    }


def _row(schedule: WorkflowSchedule) -> list[str]:
    last = schedule.last_instance_id or "-"
    return [
        schedule.schedule_id,
        schedule.workflow_name,
        _when(schedule),
        schedule.overlap,
        "paused" if schedule.paused else "active",
        last,
    ]


def _report(args: argparse.Namespace, message: str, **fields: Any) -> None:
    out = Output(args)
    if args.json:
        out.json({"schedule_id": args.schedule_id, **fields})
    else:
        out.plain(message)


async def cmd_schedule_create(args: argparse.Namespace) -> int:
    workflow_input = parse_json_option("--input", args.input)
    try:
        every = None if args.every is None else parse_interval(args.every)
    except ValueError as exc:
        raise CliError(f"--every {args.every}: {exc}") from None
    async with connected(args) as client:
        try:
            await client.create_schedule(
                args.schedule_id, args.workflow, cron=args.cron, every=every,
                input=workflow_input, overlap=args.overlap, time_zone=args.time_zone,
            )
        except ValueError as exc:
            raise CliError(str(exc)) from None
    when = f"every {args.every}" if args.every else f"on cron {args.cron!r}"
    if args.time_zone is not None:
        when += f" in {args.time_zone}"
    _report(args, f"schedule {args.schedule_id} starts {args.workflow} {when}",
            action="create", workflow=args.workflow)
    return 0


async def cmd_schedule_list(args: argparse.Namespace) -> int:
    out = Output(args)
    async with connected(args) as client:
        schedules = await client.list_schedules()
    if args.json:
        out.json([schedule_as_json(s) for s in schedules])
    elif not schedules:
        out.plain("no schedules")
    elif out.rich:
        out.show(rich_table(_HEADERS, [_row(s) for s in schedules]))
    else:
        out.plain(plain_table(_HEADERS, [_row(s) for s in schedules]))
    return 0


async def cmd_schedule_pause(args: argparse.Namespace) -> int:
    async with connected(args) as client:
        await client.pause_schedule(args.schedule_id)
    _report(args, f"paused schedule {args.schedule_id}", action="pause")
    return 0


async def cmd_schedule_resume(args: argparse.Namespace) -> int:
    async with connected(args) as client:
        await client.resume_schedule(args.schedule_id)
    _report(args, f"resumed schedule {args.schedule_id}", action="resume")
    return 0


async def cmd_schedule_delete(args: argparse.Namespace) -> int:
    async with connected(args) as client:
        await client.delete_schedule(args.schedule_id)
    _report(args, f"deleted schedule {args.schedule_id}", action="delete")
    return 0
