"""Values of command-line options: JSON payloads, statuses, counts and seconds."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine import WorkflowStatus
from engine.cli.errors import CliError


def parse_json_option(option: str, text: str | None) -> Any:
    """The value of a JSON-valued option, or a CliError naming the option.

    ``@path`` reads the JSON from a file and ``@-`` from standard input (as curl does), for
    values too large or awkward for a command line.
    """
    if text is None:
        return None
    source = ""
    if text.startswith("@"):
        source = text[1:]
        try:
            text = sys.stdin.read() if source == "-" else Path(source).read_text()
        except OSError as exc:
            raise CliError(f"{option} {text}: cannot read {source!r} ({exc.strerror})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        where = f" in {'standard input' if source == '-' else repr(source)}" if source else ""
        raise CliError(
            f"{option} is not valid JSON{where} ({exc}); quote strings as JSON, "
            f"e.g. {option} '\"text\"' or {option} '{{\"qty\": 2}}', or use {option} @file.json"
        ) from None


def status_option(text: str) -> WorkflowStatus:
    """A status name, in any case (``running``, ``RUNNING``)."""
    try:
        return WorkflowStatus(text.upper())
    except ValueError:
        names = ", ".join(s.value for s in WorkflowStatus)
        raise argparse.ArgumentTypeError(f"unknown status {text!r} (one of {names})") from None


def count_option(minimum: int) -> Callable[[str], int]:
    """A whole number of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is less than {minimum}")
        return value

    return parse


def seconds_option(text: str) -> float:
    """A positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return value
