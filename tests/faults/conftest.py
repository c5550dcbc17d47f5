"""Fixtures of the fault tests: worker subprocesses that are always stopped by PID."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from faultkit import TALLY, WorkerPool


@pytest.fixture
async def workers(tmp_path: Path) -> AsyncIterator[WorkerPool]:
    """Start fault workers (each waited for until ``ready``); stop them all afterwards."""
    pool = WorkerPool(tmp_path)
    yield pool
    await pool.stop_all()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """End the run with what the fault tests injected and what they found."""
    if TALLY.workflows or TALLY.bad_inputs:
        terminalreporter.write_sep("=", TALLY.summary())
