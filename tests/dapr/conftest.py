"""Fixtures for the Dapr compatibility tests."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator

import pytest

from tests.dapr.dapr_examples_support import Example, example_env


@pytest.fixture
def run_example(nats_url: str, prefix: str) -> Iterator[Callable[..., Example]]:
    """Start example programs on the session's nats-server, each test in its own namespace;
    anything still running at the end is stopped."""
    started: list[Example] = []

    def start(script: str, *args: str, stdin: int | None = subprocess.DEVNULL,
              **env: str) -> Example:
        example = Example(script, *args, env=example_env(nats_url, prefix, **env), stdin=stdin)
        started.append(example)
        return example

    yield start
    for example in started:
        if example.proc.poll() is None:
            example.stop()
