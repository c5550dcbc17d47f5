"""The sample under ``jetloom dev``: the whole saga hosted by one real ``jetloom dev`` process."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.js.kv import KeyValue

from engine import WorkflowClient
from sample_order_app import stock
from sample_order_app.dev import DEV_STOCK
from sample_order_app.model import Order
from tests.processes import ROOT, LineProcess, child_env
from tests.sample.orders import order_result

READY_TIMEOUT = 60.0


async def _start_dev(
    target: str, nats_url: str, prefix: str, log_dir: Path
) -> LineProcess:
    """``jetloom dev TARGET`` on the test's server and namespace, once it says it is ready."""
    with (log_dir / "dev.log").open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "engine.cli", "dev", target,
            "--nats-url", nats_url, "--prefix", prefix, "--http-port", "0",
            cwd=ROOT, env=child_env(), stdout=asyncio.subprocess.PIPE, stderr=log,
        )
    dev = LineProcess("jetloom dev", proc)
    try:
        await dev.wait_for_line(lambda line: line.startswith("jetloom dev: ready"), READY_TIMEOUT)
    except BaseException:
        await dev.stop()
        raise
    return dev


@pytest.fixture
async def dev(nats_url: str, prefix: str, tmp_path: Path) -> AsyncIterator[LineProcess]:
    """``jetloom dev sample_order_app/dev.py``, as the README runs it; stopped by PID."""
    process = await _start_dev("sample_order_app/dev.py", nats_url, prefix, tmp_path)
    try:
        yield process
    finally:
        await process.stop()


class TestSagaUnderDev:
    async def test_dev_hosts_every_service_of_the_saga(self, dev: LineProcess) -> None:
        """One runtime hosts the workflow and the activities of every service."""
        hosting = [line for line in dev.lines if line.startswith("jetloom dev: hosting")]
        assert [
            "jetloom dev: hosting sample_order_app/dev.py:wfr"
        ] == [line.split(" (", 1)[0] for line in hosting]
        assert (
            "workflows: order_processing; "
            "activities: get_quote, register_shipment, reserve, restore)"
        ) in hosting[0]

    async def test_orders_ship_and_compensate(
        self, dev: LineProcess, client: WorkflowClient, stock_kv: KeyValue
    ) -> None:
        """An order started through the client ships with the cheapest provider and takes
        its units from the stock dev put in; one whose shipment fails gives them back."""
        await client.schedule_new_workflow(
            "order_processing", input=Order("widget", 2), instance_id="order-1"
        )
        shipped = await order_result(client, "order-1")
        await client.schedule_new_workflow(
            "order_processing", input=Order("widget", 3), instance_id="fail-ship-2"
        )
        failed = await order_result(client, "fail-ship-2")
        assert ("shipped", "budget", 7.5) == (shipped.status, shipped.provider, shipped.price)
        assert "failed" == failed.status
        assert "compensated: stock restored" in failed.reason
        assert DEV_STOCK["widget"] - 2 == await stock.available(stock_kv, "widget")

    async def test_stops_gracefully_and_keeps_the_stock_on_restart(
        self, nats_url: str, prefix: str, tmp_path: Path, client: WorkflowClient,
        stock_kv: KeyValue,
    ) -> None:
        """dev of the dotted module name exits 0 on SIGTERM; started again on the same
        server, it leaves the stock an earlier order took as it was."""
        first = await _start_dev("sample_order_app.dev", nats_url, prefix, tmp_path)
        try:
            await client.schedule_new_workflow(
                "order_processing", input=Order("gadget", 4), instance_id="order-3"
            )
            assert "shipped" == (await order_result(client, "order-3")).status
        finally:
            await first.stop()
        second = await _start_dev("sample_order_app.dev", nats_url, prefix, tmp_path)
        await second.stop()
        assert (0, "jetloom dev: stopped") == (first.proc.returncode, first.lines[-1])
        assert DEV_STOCK["gadget"] - 4 == await stock.available(stock_kv, "gadget")
