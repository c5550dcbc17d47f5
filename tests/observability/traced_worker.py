"""Runs one saga with telemetry configured from the OTEL_* environment, then exits.

Usage: python traced_worker.py <nats_url> <prefix>; prints the instance id.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent.parent), str(HERE)]

from traced_saga import build  # noqa: E402

import observability  # noqa: E402
from engine import WorkflowClient, WorkflowRuntime  # noqa: E402


async def main(nats_url: str, prefix: str) -> None:
    """Run the saga on its failure path, in one process."""
    telemetry = observability.configure(service_name="saga-worker", json=True)
    wfr = WorkflowRuntime(nats_url, prefix=prefix)
    build(wfr)
    async with wfr:
        client = await WorkflowClient.connect(nats_url, prefix=prefix)
        iid = await client.schedule_new_workflow("saga", input={"fail": True})
        await client.wait_for_workflow_completion(iid, timeout=30)
        await client.close()
    telemetry.shutdown()
    print(iid, flush=True)


asyncio.run(main(sys.argv[1], sys.argv[2]))
