"""A benchmark worker process: ``python bench/worker.py URL PREFIX ROLE``."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.workloads import build_runtime
from engine._loop import run as run_loop


async def main(url: str, prefix: str, role: str) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    runtime = build_runtime(
        url, prefix, workflows=role in ("orchestrator", "both"),
        activities=role in ("activities", "both"), max_tasks=1000,
    )
    await runtime.start()
    print("ready", flush=True)
    await runtime.run()


if __name__ == "__main__":
    run_loop(main(*sys.argv[1:4]))
