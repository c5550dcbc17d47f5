"""Running Dapr's example programs as subprocesses and checking what they print."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
EXAMPLES = Path(__file__).resolve().parent / "examples"
README = EXAMPLES / "README.dapr.md"
"""dapr/python-sdk's examples/workflow/README.md, as it was copied with the examples."""


@dataclass(frozen=True)
class ReadmeStep:
    """One ``<!--STEP ... -->`` block of the README: what its commands must print."""

    expected_lines: list[str]
    ordered: bool
    scripts: list[str]
    env: dict[str, str] = field(default_factory=dict)
    app_ids: dict[str, str] = field(default_factory=dict)
    """The ``--app-id`` each script runs with (what ``APP_ID`` tells a jetloom process)."""


def readme_steps() -> list[ReadmeStep]:
    """Every step of the examples' README with its expected stdout lines, the scripts its
    ``sh`` block runs and the variables it exports."""
    text = README.read_text()
    steps = []
    pattern = re.compile(r"<!--\s*STEP(.*?)-->(.*?)<!--\s*END_STEP\s*-->", re.S)
    for header, body in pattern.findall(text):
        expected: list[str] = []
        if "expected_stdout_lines:" in header:
            for line in header.split("expected_stdout_lines:", 1)[1].splitlines()[1:]:
                item = re.match(r"""^\s*-\s*(["'])(.*)\1\s*$""", line)
                if item is None:
                    break
                expected.append(item.group(2))
        block = re.search(r"```sh\n(.*?)```", body, re.S)
        commands = block.group(1) if block else ""
        steps.append(ReadmeStep(
            expected_lines=expected,
            ordered="match_order: none" not in header,
            scripts=re.findall(r"python3 ([\w-]+\.py)", commands),
            env=dict(re.findall(r"export (\w+)=(\S+)", commands)),
            app_ids={script: app for app, script in re.findall(
                r"--app-id (\S+) .*?python3 ([\w-]+\.py)", commands)},
        ))
    return steps


def steps_running(script: str) -> list[ReadmeStep]:
    """The README steps whose commands run ``script``."""
    return [s for s in readme_steps() if script in s.scripts]


def example_env(nats_url: str, prefix: str, **extra: str) -> dict[str, str]:
    """A Dapr example's environment: NATS instead of a sidecar, its own jetloom namespace."""
    env = {
        key: value for key, value in os.environ.items()
        if not key.startswith(("APP_ID", "ERROR_", "DAPR_"))
    }
    env.update(
        NATS_URL=nats_url,
        JETLOOM_PREFIX=prefix,
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
        PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]),
    )
    env.update(extra)
    return env


class Example:
    """One example program run as a subprocess (stdout and stderr kept apart)."""

    def __init__(self, script: str, *args: str, env: dict[str, str],
                 stdin: int | None = subprocess.DEVNULL) -> None:
        self.script = script
        self.proc = subprocess.Popen(
            [sys.executable, script, *args], cwd=EXAMPLES, env=env, stdin=stdin,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.stdout = ""
        self.stderr = ""

    def wait(self, timeout: float) -> Example:
        """Wait for the program to end (killing it after ``timeout`` seconds)."""
        try:
            self.stdout, self.stderr = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.stdout, self.stderr = self.proc.communicate()
        return self

    def stop(self) -> Example:
        """End a program that serves until stopped (SIGTERM, by its PID)."""
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.wait(10)

    def read_until(self, pattern: str, timeout: float) -> str:
        """Read stdout until a line matches ``pattern``; the text read so far."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if re.search(pattern, line):
                break
        self.stdout = "".join(seen)
        return self.stdout

    @property
    def lines(self) -> list[str]:
        """The stdout lines, stripped."""
        return [line.strip() for line in self.stdout.splitlines()]

    def report(self) -> str:
        """What a failed assertion shows: the program's output and the end of its log."""
        return (f"--- {self.script} exited {self.proc.returncode}\n--- stdout:\n{self.stdout}"
                f"--- stderr (end):\n{self.stderr[-3000:]}")


def missing_lines(expected: list[str], output: str, *, ordered: bool) -> list[str]:
    """The expected lines not printed (in order, if ``ordered``); [] if all were.

    Matched as text in the output, as Dapr's own example tests do: plain ``def`` activities
    print from several threads at once, and one's line may end up glued to another's.
    """
    if not ordered:
        return [line for line in expected if line not in output]
    missing, position = [], 0
    for line in expected:
        found = output.find(line, position)
        if found < 0:
            missing.append(line)
        else:
            position = found + len(line)
    return missing
