"""Runs docs/guide.md: every code block in it is a program, a module or the output of one.

Each fenced block may be preceded by one HTML comment (invisible on GitHub) that says how the
block takes part:

    <!-- test: file NAME -->    a module, saved as NAME in the reader's project directory;
                                the blocks after it (anywhere in the guide) may import it
    <!-- test: output -->       a ```text block: what the runnable block before it prints
    <!-- test: continues -->    runs after the runnable block before it, in the same test
                                (same directory and NATS namespace), e.g. a CLI command that
                                inspects the instance a program just ran
    <!-- test: background [TEXT] -->
                                starts a test and runs in the background for the rest of
                                it, like a second terminal (``jetloom dev``, a worker); with
                                TEXT, the next step starts once a line of its output (stdout
                                and stderr) contains TEXT, as a reader waits for "ready"
    <!-- test: skip REASON -->  not run; the reason is required and shows in the report

Every other ```python block is a complete program, run with this venv's Python; every other
```bash block runs in bash (``-e``, so any failing command fails the step). Blocks in other
languages (```text, ```json) are illustrations and are not checked.

One test is one runnable block plus the blocks that continue it, named
``<section slug>-<n>`` (the n-th test of the ``##`` section). It runs in a fresh directory holding
every module defined above it, on the session's nats-server (NATS_URL) with a namespace of its
own (JETLOOM_PREFIX), with the venv's ``bin`` first on PATH as after ``source
.venv/bin/activate``. A step passes when it exits 0 and, if an output block follows it, prints
that output. Outputs are compared after normalising what changes from run to run: timestamps
become ``<time>``, durations (``+10ms``, ``took=1.2s``) ``<duration>``, runs of spaces one
space, a table's rule of dashes (as wide as the widest value) three dashes; ``...`` in an
expected output matches any text within a line. Background steps must still be running when
the test ends; they are then stopped with SIGTERM (by process group id).

The guide's ``nats req`` commands run against a stand-in for the nats CLI (written below, it
only does ``req``): it sends the subject and JSON body exactly as written, on the test's
namespace instead of ``jetloom``, and prints the reply with the stream names mapped back, so the
subjects and bodies the guide shows are checked against a real worker.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "guide.md"
README = ROOT / "README.md"

STEP_TIMEOUT = 120.0
"""Seconds one step may run (the longest waits in the guide are a few seconds)."""

XFAIL: dict[str, str] = {}
"""Tests of blocks that fail because of a known engine bug or gap: the guide shows what should
work, and each xfail is strict, so the fix makes its test fail until the entry is removed."""


# ------------------------------------------------------------------ the guide as steps


_MARKER = re.compile(r"^<!--\s*test:\s*(?P<kind>[a-z]+)\s*(?P<arg>.*?)\s*-->\s*$")
_FENCE = re.compile(r"^```(?P<lang>[A-Za-z0-9_+-]*)\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced block of the guide and the marker before it."""

    line: int
    """1-based line of the opening fence."""
    lang: str
    code: str
    section: str
    """Slug of the ``##`` section it is in."""
    marker: str = ""
    """``file``, ``output``, ``continues``, ``background``, ``skip`` or empty."""
    arg: str = ""


@dataclass
class Step:
    """A runnable block and the output it must print (None: not checked)."""

    block: Block
    expected: str | None = None
    background: bool = False


@dataclass
class GuideTest:
    """One test: its steps, in order, and the modules written before it starts."""

    test_id: str
    steps: list[Step] = field(default_factory=list)
    modules_before: list[Block] = field(default_factory=list)
    modules_within: dict[int, list[Block]] = field(default_factory=dict)
    """Modules defined between its steps, by the index of the step they come before."""
    skip_reason: str = ""


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as dashes."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def parse_blocks(text: str) -> list[Block]:
    """The fenced blocks of a Markdown text, each with its section and marker.

    Raises:
        ValueError: a marker that is unknown, lacks its argument, or is not followed by a block.
    """
    blocks: list[Block] = []
    lines = text.splitlines()
    section = "top"
    marker: tuple[str, str, int] | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            section = slug(line[3:])
        found = _MARKER.match(line)
        if found:
            kind, arg = found["kind"], found["arg"]
            if kind not in ("file", "output", "continues", "background", "skip"):
                raise ValueError(f"guide line {i + 1}: unknown marker {kind!r}")
            if kind in ("file", "skip") and not arg:
                raise ValueError(f"guide line {i + 1}: '{kind}' needs a name or reason")
            marker = (kind, arg, i + 1)
            i += 1
            continue
        fence = _FENCE.match(line)
        if fence:
            end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), None)
            if end is None:
                raise ValueError(f"guide line {i + 1}: unterminated code block")
            kind, arg = ("", "")
            if marker is not None:
                if marker[2] != i:
                    raise ValueError(f"guide line {marker[2]}: a marker must precede a block")
                kind, arg = marker[0], marker[1]
            code = "\n".join(lines[i + 1 : end]) + "\n"
            blocks.append(Block(i + 1, fence["lang"], code, section, kind, arg))
            marker = None
            i = end + 1
            continue
        if marker is not None and line.strip():
            raise ValueError(f"guide line {marker[2]}: a marker must precede a block")
        i += 1
    return blocks


def guide_tests(blocks: list[Block]) -> list[GuideTest]:
    """Group the guide's blocks into tests (see the module docstring).

    Raises:
        ValueError: an output block that follows no runnable block, a continuation with
            nothing to continue, or a module of an unknown language.
    """
    tests: list[GuideTest] = []
    modules: list[Block] = []
    per_section: dict[str, int] = {}
    current: GuideTest | None = None
    last_step: Step | None = None
    for block in blocks:
        where = f"guide line {block.line}"
        if block.marker == "file":
            if block.lang != "python":
                raise ValueError(f"{where}: only python modules are supported")
            modules.append(block)
            if current is not None:
                current.modules_within.setdefault(len(current.steps), []).append(block)
            last_step = None
            continue
        if block.marker == "output":
            if last_step is None or last_step.expected is not None:
                raise ValueError(f"{where}: an output block must follow a runnable block")
            last_step.expected = block.code
            continue
        if block.lang not in ("python", "bash"):
            if block.marker:
                raise ValueError(f"{where}: a marked block must be python or bash")
            last_step = None
            continue
        step = Step(block, background=block.marker == "background")
        if block.marker == "continues":
            if (
                current is None
                or current.skip_reason
                or current.steps[-1].block.section != block.section
            ):
                raise ValueError(f"{where}: nothing in this section to continue")
            current.steps.append(step)
        else:
            per_section[block.section] = per_section.get(block.section, 0) + 1
            current = GuideTest(
                f"{block.section}-{per_section[block.section]}",
                [step],
                list(modules),
                skip_reason=block.arg if block.marker == "skip" else "",
            )
            tests.append(current)
        last_step = step
    return tests


GUIDE_TESTS = guide_tests(parse_blocks(GUIDE.read_text()))


# ------------------------------------------------------------------ running a step


_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})?")
_DURATION = re.compile(r"(?<![\w.])[+-]?\d+(?:\.\d+)?(?:ms|s)\b")


def normalise(text: str) -> str:
    """Output with what changes between runs replaced (see the module docstring)."""
    text = _DURATION.sub("<duration>", _TIME.sub("<time>", text))
    text = re.sub(r"-{3,}", "---", text)  # a table's rule is as wide as its widest value
    lines = [re.sub(r"[ \t]+", " ", line).strip() for line in text.strip("\n").splitlines()]
    return "\n".join(lines).strip("\n")


def output_matches(expected: str, actual: str) -> bool:
    """True if ``actual`` is ``expected``, ``...`` standing for any text within a line."""
    pattern = "[^\n]*".join(re.escape(part) for part in normalise(expected).split("..."))
    return re.fullmatch(pattern, normalise(actual)) is not None


NATS_STAND_IN = '''\
"""A stand-in for the nats CLI that only does 'nats req [-H K:V]... SUBJECT BODY'.

It sends to the test's namespace (JETLOOM_PREFIX) where the subject says 'jetloom', and prints
the reply with the namespace's stream names written as the default ones.
"""
import asyncio
import os
import sys

import nats


async def request(subject: str, body: str, headers: dict[str, str]) -> str:
    nc = await nats.connect(os.environ["NATS_URL"])
    try:
        reply = await nc.request(subject, body.encode(), timeout=10, headers=headers or None)
    finally:
        await nc.close()
    return reply.data.decode()


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("req", "request"):
        print("error: this stand-in for the nats CLI only does 'nats req'", file=sys.stderr)
        return 2
    headers: dict[str, str] = {}
    positional: list[str] = []
    args = iter(argv[1:])
    for arg in args:
        if arg in ("-H", "--header"):
            key, _, value = next(args).partition(":")
            headers[key.strip()] = value.strip()
        else:
            positional.append(arg)
    subject, body = positional
    prefix = os.environ["JETLOOM_PREFIX"]
    if subject.startswith("jetloom."):
        subject = prefix + subject[len("jetloom"):]
    reply = asyncio.run(request(subject, body, headers))
    print(reply.replace(f'"{prefix.upper()}_', '"JETLOOM_'))
    return 0


sys.exit(main(sys.argv[1:]))
'''


@pytest.fixture(scope="session")
def stand_in_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the ``nats`` stand-in, to put first on PATH."""
    directory = tmp_path_factory.mktemp("guide-bin")
    script = directory / "nats"
    script.write_text(f"#!{sys.executable}\n{NATS_STAND_IN}")
    script.chmod(0o755)
    return directory


def step_env(nats_url: str, prefix: str, stand_in: Path) -> dict[str, str]:
    """A reader's shell after ``source .venv/bin/activate``, on the test's server and namespace."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NATS_", "JETLOOM_"))}
    venv_bin = os.path.dirname(sys.executable)
    env.update(
        PATH=os.pathsep.join([str(stand_in), venv_bin, env.get("PATH", "")]),
        VIRTUAL_ENV=os.path.dirname(venv_bin),
        NATS_URL=nats_url,
        JETLOOM_PREFIX=prefix,
        NO_COLOR="1",
        PYTHONUNBUFFERED="1",
    )
    return env


def command_for(step: Step, directory: Path, index: int) -> list[str]:
    """Write the step's code next to the modules and return the command that runs it."""
    block = step.block
    if block.lang == "python":
        path = directory / f"guide_step_{index}.py"
        path.write_text(block.code)
        return [sys.executable, path.name]
    path = directory / f"guide_step_{index}.sh"
    path.write_text(block.code)
    return ["bash", "-e", path.name]


def describe(step: Step, result: subprocess.CompletedProcess[str] | None = None) -> str:
    """The step's code (and what it printed) for a failure message."""
    text = f"guide line {step.block.line}:\n{textwrap.indent(step.block.code, '    ')}"
    if result is not None:
        text += f"\nexit code {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n"
        text += result.stderr[-4000:]
    return text


@dataclass
class Background:
    """A background step's process; a thread collects its output lines."""

    step: Step
    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    _reader: threading.Thread | None = None

    @classmethod
    def start(
        cls, step: Step, command: list[str], directory: Path, env: dict[str, str]
    ) -> Background:
        """Start the step in a process group of its own (so it can be stopped whole)."""
        proc = subprocess.Popen(
            command,
            cwd=directory,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        return cls(step, proc)

    def wait_for(self, text: str, timeout: float = STEP_TIMEOUT) -> None:
        """Read output lines until one contains ``text``, then keep collecting them."""
        found = threading.Event()
        assert self.proc.stdout is not None
        stdout = self.proc.stdout

        def read() -> None:
            for line in stdout:
                self.lines.append(line)
                if text and text in line:
                    found.set()
            found.set()  # the process ended: do not wait any longer

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        if text:
            assert found.wait(timeout), f"no line with {text!r} within {timeout}s"
            assert any(text in line for line in self.lines), (
                f"the background step ended before printing {text!r}: {describe(self.step)}\n"
                f"its output:\n{self.output()}"
            )

    def output(self) -> str:
        """The last of what it printed."""
        return "".join(self.lines)[-4000:]

    def stop(self) -> None:
        """SIGTERM to its process group (it leads one), SIGKILL if it does not end."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture
def backgrounds() -> Iterator[list[Background]]:
    """Background steps of the test, stopped when it ends (pass or fail)."""
    started: list[Background] = []
    yield started
    for background in reversed(started):
        background.stop()


def write_modules(directory: Path, modules: list[Block]) -> None:
    """Save the guide's modules where the reader would: next to the programs that import them."""
    for module in modules:
        (directory / module.arg).write_text(module.code)


def run_guide_test(
    guide_test: GuideTest, directory: Path, env: dict[str, str], backgrounds: list[Background]
) -> None:
    """Run the test's steps in order; fail at the first step that fails."""
    write_modules(directory, guide_test.modules_before)
    for index, step in enumerate(guide_test.steps):
        write_modules(directory, guide_test.modules_within.get(index, []))
        command = command_for(step, directory, index)
        if step.background:
            background = Background.start(step, command, directory, env)
            backgrounds.append(background)
            background.wait_for(step.block.arg)
            continue
        result = subprocess.run(
            command,
            cwd=directory,
            env=env,
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT,
        )
        assert 0 == result.returncode, describe(step, result)
        if step.expected is not None:
            assert output_matches(step.expected, result.stdout), (
                f"{describe(step, result)}\nexpected output:\n{step.expected}"
            )
    for background in backgrounds:
        assert background.proc.poll() is None, (
            f"a background step ended early: {describe(background.step)}\n"
            f"its output:\n{background.output()}"
        )


def _params() -> list[object]:
    """One pytest parameter per test of the guide, with its skip or known-bug mark."""
    params: list[object] = []
    for guide_test in GUIDE_TESTS:
        marks: list[pytest.MarkDecorator] = []
        if guide_test.skip_reason:
            marks.append(pytest.mark.skip(reason=guide_test.skip_reason))
        if guide_test.test_id in XFAIL:
            marks.append(pytest.mark.xfail(reason=XFAIL[guide_test.test_id], strict=True))
        params.append(pytest.param(guide_test, id=guide_test.test_id, marks=marks))
    return params


# ------------------------------------------------------------------------- the tests


class TestGuide:
    @pytest.mark.timeout(600)
    @pytest.mark.parametrize("guide_test", _params())
    def test_blocks_run_as_shown(
        self,
        guide_test: GuideTest,
        nats_url: str,
        prefix: str,
        tmp_path: Path,
        stand_in_bin: Path,
        backgrounds: list[Background],
    ) -> None:
        """Each program and command of the guide runs and prints what the guide shows."""
        run_guide_test(guide_test, tmp_path, step_env(nats_url, prefix, stand_in_bin), backgrounds)

    def test_every_xfail_names_a_test_of_the_guide(self) -> None:
        """A known-bug entry whose block was renamed or removed is noticed."""
        assert set() == set(XFAIL) - {t.test_id for t in GUIDE_TESTS}

    def test_skips_are_rare(self) -> None:
        """Skipped blocks stay the exception: the guide is meant to run."""
        skipped = [t.test_id for t in GUIDE_TESTS if t.skip_reason]
        assert len(skipped) <= 2, skipped

    def test_readme_links_the_guide_near_the_top(self) -> None:
        """A newcomer reaches the guide from the README's opening lines, in one click."""
        top = README.read_text().splitlines()[:15]
        assert any("(docs/guide.md)" in line for line in top)


class TestOutputMatching:
    def test_times_durations_and_spacing_are_normalised(self) -> None:
        """Timestamps, durations and column padding do not make outputs differ."""
        assert output_matches(
            "1  2026-01-01 00:00:00.000Z  +10ms   task_completed  took=14ms",
            "1  2026-12-06 05:13:45.544Z  -1ms  task_completed    took=1.5s",
        )

    def test_ellipsis_matches_within_a_line_only(self) -> None:
        """``...`` stands for text inside one line, never for missing lines."""
        assert output_matches('{"seq":...}', '{"seq":17}')
        assert not output_matches("a...\nc", "ab\nb2\nc")

    def test_different_text_does_not_match(self) -> None:
        """A changed word is a mismatch."""
        assert not output_matches("status: COMPLETED", "status: FAILED")
