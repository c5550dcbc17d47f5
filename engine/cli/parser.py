"""The ``jetloom`` command line's grammar: the options every command shares and the
subcommands, group by group (hosting, instances, steering, overview)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import NoReturn

from brokers import DEFAULT_NATS_URL, NATS_AUTH_ENVIRONMENT, NATS_AUTH_OPTIONS, prefix_or_default
from engine.cli.dev import DEV_DEFAULT_PORT, DEV_DEFAULT_STORE, cmd_dev
from engine.cli.instances import (
    LIST_DEFAULT_PAGE_SIZE,
    cmd_history,
    cmd_list,
    cmd_pause,
    cmd_purge,
    cmd_raise,
    cmd_rerun,
    cmd_resume,
    cmd_start,
    cmd_status,
    cmd_terminate,
)
from engine.cli.options import count_option, seconds_option, status_option
from engine.cli.schedules import (
    cmd_schedule_create,
    cmd_schedule_delete,
    cmd_schedule_list,
    cmd_schedule_pause,
    cmd_schedule_resume,
)
from engine.cli.serve_http import HTTP_DEFAULT_PORT, cmd_serve_http
from engine.cli.stats import cmd_stats
from engine.cli.watch import cmd_watch
from engine.http.console import DEFAULT_JAEGER_URL

_Command = Callable[[str, str], argparse.ArgumentParser]
"""Adds a subcommand (name, help) with the common options and returns its parser."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (plus where to get help), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see '{self.prog} --help')\n")


def _add_console_options(parser: argparse.ArgumentParser) -> None:
    """Options of the web console and of the API token that guards it and the Dapr API."""
    parser.add_argument(
        "--jaeger-url",
        default=DEFAULT_JAEGER_URL,
        help=f"Jaeger UI that the console's trace links open (default {DEFAULT_JAEGER_URL})",
    )
    parser.add_argument(
        "--api-token",
        default=os.environ.get("JETLOOM_API_TOKEN") or None,
        help="require this token (dapr-api-token header, bearer token or the console's login) "
        "on the HTTP API and the console (default: JETLOOM_API_TOKEN; none)",
    )


def _add_auth_options(parser: argparse.ArgumentParser) -> None:
    """The nats CLI's credential and TLS options, each falling back to its variable."""
    group = parser.add_argument_group(
        "NATS credentials and TLS (as the nats CLI; secrets are never printed)"
    )
    helps = {
        "user": ("USER", "user name, with --password"),
        "password": ("PASSWORD", "password of --user"),
        "token": ("TOKEN", "authentication token"),
        "creds": ("FILE", "user credentials file (.creds: user JWT and nkey seed)"),
        "nkey": ("FILE", "file holding the user's nkey seed (SU...)"),
        "tls_cert": ("FILE", "TLS client certificate (PEM), with --tlskey"),
        "tls_key": ("FILE", "private key of --tlscert (PEM)"),
        "tls_ca": ("FILE", "CA certificates that signed the server's certificate (PEM)"),
    }
    for name, (metavar, text) in helps.items():
        fallback = NATS_AUTH_ENVIRONMENT[name]
        if name == "tls_ca":
            fallback += ", then the system's CAs"
        group.add_argument(
            NATS_AUTH_OPTIONS[name],
            dest=name,
            metavar=metavar,
            help=f"{text} (default: {fallback})",
        )


def _common_options() -> _Parser:
    """Where NATS is, the prefix, credentials and TLS, and ``--no-color``."""
    common = _Parser(add_help=False)
    common.add_argument(
        "--nats-url",
        help=f"NATS server URL(s), comma separated (default: NATS_URL, then {DEFAULT_NATS_URL})",
    )
    common.add_argument(
        "--prefix",
        default=prefix_or_default(),
        help="namespace of subjects, streams and buckets (default: JETLOOM_PREFIX, then jetloom)",
    )
    _add_auth_options(common)
    common.add_argument(
        "--no-color",
        action="store_true",
        help="plain text without colours or boxes (also when NO_COLOR is set or not a terminal)",
    )
    return common


def _json_flag(parser: argparse.ArgumentParser, text: str = "print JSON") -> None:
    parser.add_argument("--json", action="store_true", help=text)


def _instance_command(command: _Command, name: str, help_text: str) -> argparse.ArgumentParser:
    """A command on one instance: ``ID`` and ``--json``."""
    p = command(name, help_text)
    p.add_argument("instance_id", metavar="ID")
    _json_flag(p)
    return p


def _add_hosting_commands(command: _Command) -> None:
    """``dev`` and ``serve-http``: long-running services, stopped by a signal."""
    p = command("dev", "host the WorkflowRuntimes of modules (embedded nats-server by default)")
    p.add_argument(
        "modules", nargs="+", metavar="MODULE_OR_FILE",
        help="dotted name or .py file; several share one runtime, with the largest of their "
        "concurrency limits (other settings must agree)",
    )
    p.add_argument(
        "--port",
        type=int,
        help=f"embedded server port (default {DEV_DEFAULT_PORT}; 0 picks a free one)",
    )
    p.add_argument(
        "--store",
        help=f"embedded server's JetStream folder (default ./{DEV_DEFAULT_STORE}: instances and "
        "timers survive a restart)",
    )
    p.add_argument(
        "--temporary",
        action="store_true",
        help="run the embedded server on a throwaway store, removed on exit",
    )
    p.add_argument(
        "--http-port",
        type=count_option(0),
        help=f"port of the console and Dapr's HTTP API on 127.0.0.1 (default {HTTP_DEFAULT_PORT}, "
        "or a free one if taken; 0 picks a free one)",
    )
    _add_console_options(p)
    p.set_defaults(handler=cmd_dev, is_service=True)

    p = command("serve-http", "serve Dapr's workflow HTTP API (v1.0 and v1.0-beta1) over NATS")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument(
        "--port",
        type=count_option(0),
        default=HTTP_DEFAULT_PORT,
        help=f"port to listen on (default {HTTP_DEFAULT_PORT}, Dapr's; 0 picks a free one)",
    )
    _add_console_options(p)
    p.set_defaults(handler=cmd_serve_http, is_service=True)


def _add_instance_commands(command: _Command) -> None:
    """``start`` an instance; ``status``, ``history`` and ``watch`` show one."""
    p = command("start", "start a workflow instance and print its id")
    p.add_argument("workflow", help="registered workflow name")
    p.add_argument(
        "--input",
        help="the input as JSON, e.g. '{\"qty\": 2}' or '\"text\"' (@file.json: from a file, "
        "@-: stdin)",
    )
    p.add_argument("--id", help="instance id (default: generated)")
    p.add_argument(
        "--wait",
        action="store_true",
        help="wait for the end, or a STALLED instance; print status and output or failure "
        "(exit 1 unless COMPLETED)",
    )
    p.add_argument("--timeout", type=float, default=60.0, help="seconds --wait waits (60)")
    _json_flag(p, "print {instance_id} (with --wait: the final state) as JSON")
    p.set_defaults(handler=cmd_start)

    p = _instance_command(
        command, "status", "show an instance's status, input, output, custom status and failure"
    )
    p.set_defaults(handler=cmd_status)

    p = command(
        "history",
        "show an instance's events with times, durations and task ids; the # column is the "
        "event id that rerun --from-event takes",
    )
    p.add_argument("instance_id", metavar="ID")
    _json_flag(p, "print the events as JSON (with event_id, delta_s and took_s)")
    p.set_defaults(handler=cmd_history)

    p = command(
        "watch",
        "follow an instance until it finishes, or every running instance (Ctrl-C stops)",
    )
    p.add_argument("instance_id", metavar="ID", nargs="?", help="instance (default: all running)")
    p.add_argument("--once", action="store_true", help="show the current state and exit")
    p.add_argument("--timeout", type=seconds_option, help="stop watching after this many seconds")
    _json_flag(p, "print one JSON state per line per change")
    p.set_defaults(handler=cmd_watch)


def _add_steering_commands(command: _Command) -> None:
    """``raise``, ``terminate``, ``pause``, ``resume`` and ``purge`` one instance."""
    p = command("raise", "raise an external event to an instance")
    p.add_argument("instance_id", metavar="ID")
    p.add_argument("event", metavar="EVENT", help="event name")
    p.add_argument("--data", help="event data as JSON (@file.json: from a file, @-: stdin)")
    _json_flag(p)
    p.set_defaults(handler=cmd_raise)

    p = command("terminate", "terminate an instance (and its child workflows)")
    p.add_argument("instance_id", metavar="ID")
    p.add_argument(
        "--output", help="the instance's output as JSON (@file.json: from a file, @-: stdin)"
    )
    p.add_argument(
        "--no-recursive",
        dest="recursive",
        action="store_false",
        help="leave child workflows running",
    )
    _json_flag(p)
    p.set_defaults(handler=cmd_terminate)

    p = _instance_command(
        command, "pause", "suspend an instance (events are held until it resumes)"
    )
    p.set_defaults(handler=cmd_pause)
    p = _instance_command(command, "resume", "resume a suspended instance")
    p.set_defaults(handler=cmd_resume)
    p = _instance_command(
        command, "purge", "delete a finished instance's history and state (and its children's)"
    )
    p.set_defaults(handler=cmd_purge)

    p = command(
        "rerun",
        "start a new instance from a finished one's history up to an activity, which runs "
        "again, then the code as deployed now; print the new id",
    )
    p.add_argument("instance_id", metavar="ID", help="the finished instance to rerun")
    p.add_argument(
        "--from-event",
        type=count_option(0),
        required=True,
        metavar="N",
        help="event id of an activity's task_scheduled (the # column of jetloom history)",
    )
    p.add_argument("--id", help="the new instance's id (default: generated)")
    p.add_argument(
        "--input",
        help="a new input for that activity as JSON (@file.json: from a file, @-: stdin; "
        "default: the input it had)",
    )
    p.add_argument(
        "--wait",
        action="store_true",
        help="wait for the end; print status and output (exit 1 unless COMPLETED)",
    )
    p.add_argument("--timeout", type=float, default=60.0, help="seconds --wait waits (60)")
    _json_flag(p, "print {instance_id} (with --wait: the final state) as JSON")
    p.set_defaults(handler=cmd_rerun)


def _add_schedule_commands(group: _Command, common: _Parser) -> None:
    """``schedule create|list|pause|resume|delete``: recurring starts kept by nats-server."""
    p = group("schedule", "recurring schedules: start a workflow on a cron or interval")
    actions = p.add_subparsers(
        dest="schedule_command", required=True, metavar="ACTION", parser_class=_Parser
    )

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        return actions.add_parser(name, parents=[common], help=help_text, description=help_text)

    p = action(
        "create",
        "create a schedule: each tick starts one instance named <schedule>-<tick>, even while "
        "no worker runs (it starts when one does)",
    )
    p.add_argument("schedule_id", metavar="SCHEDULE", help="1-40 letters, digits, '-', '_'")
    p.add_argument("workflow", help="registered workflow name")
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument(
        "--cron",
        help="cron expression, in UTC unless --time-zone: 5 fields ('0 9 * * MON-FRI'), 6 "
        "with seconds first, or @hourly, @daily, @weekly, @monthly",
    )
    when.add_argument("--every", help="interval, e.g. 30s, 5m, 1h30m")
    p.add_argument(
        "--time-zone",
        metavar="ZONE",
        help="IANA time zone the --cron times are in, e.g. Europe/Amsterdam (default UTC)",
    )
    p.add_argument("--input", help="the input of each instance as JSON (@file.json, @-)")
    p.add_argument(
        "--overlap",
        choices=["skip", "allow"],
        default="skip",
        help="skip a tick while the previous instance runs (default), or allow overlaps",
    )
    _json_flag(p)
    p.set_defaults(handler=cmd_schedule_create)

    p = action("list", "list schedules")
    _json_flag(p)
    p.set_defaults(handler=cmd_schedule_list)
    for name, help_text, handler in (
        ("pause", "stop a schedule's firings until resumed", cmd_schedule_pause),
        ("resume", "let a paused schedule fire again", cmd_schedule_resume),
        ("delete", "delete a schedule (its instances stay)", cmd_schedule_delete),
    ):
        p = action(name, help_text)
        p.add_argument("schedule_id", metavar="SCHEDULE")
        _json_flag(p)
        p.set_defaults(handler=handler)


def _add_overview_commands(command: _Command) -> None:
    """``list`` instances and ``stats`` of instances and work consumers."""
    p = command("list", "list instances, oldest first")
    p.add_argument(
        "--status",
        type=status_option,
        action="append",
        help="only this status, e.g. RUNNING (repeat for several)",
    )
    p.add_argument("--workflow", help="only instances of this workflow name")
    p.add_argument("--limit", type=count_option(1), help="at most this many instances")
    paging = p.add_mutually_exclusive_group()
    paging.add_argument("--offset", type=count_option(0), help="skip this many instances")
    paging.add_argument(
        "--page",
        type=count_option(1),
        help=f"page number, 1-based, of --limit instances (default {LIST_DEFAULT_PAGE_SIZE})",
    )
    p.add_argument("--newest-first", action="store_true", help="newest instances first")
    _json_flag(p)
    p.set_defaults(handler=cmd_list)

    p = command(
        "stats",
        "instance counts by status, the backlog of each work consumer and the storage each "
        "stream uses",
    )
    _json_flag(p)
    p.set_defaults(handler=cmd_stats)


def build_parser() -> argparse.ArgumentParser:
    """The ``jetloom`` argument parser with all subcommands.

    Each subcommand sets ``handler`` (a coroutine function of the arguments returning the
    exit code; a plain function for ``is_service`` commands, which run their own event loop).
    """
    common = _common_options()
    parser = _Parser(
        prog="jetloom",
        description="Durable workflows on NATS JetStream: host, start, inspect and steer them.",
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], help=help_text, description=help_text)

    def group(name: str, help_text: str) -> argparse.ArgumentParser:
        """A command whose actions are subcommands (they take the common options)."""
        return sub.add_parser(name, help=help_text, description=help_text)

    _add_hosting_commands(command)
    _add_instance_commands(command)
    _add_steering_commands(command)
    _add_schedule_commands(group, common)
    _add_overview_commands(command)
    return parser
