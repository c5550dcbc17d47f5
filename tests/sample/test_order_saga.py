"""The order-processing sample end to end: every service a real process, talking over NATS."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO

import nats
import pytest

from sample_order_app import stock
from sample_order_app.shipping import started_subject
from tests.processes import ROOT, LineProcess, child_env
from tests.sample.orders import ORDER_TIMEOUT, order_result

READY_TIMEOUT = 30.0
PROVIDER_PRICES = {"budget": 5.0, "parcelly": 7.0, "swift": 9.0}


class Service(LineProcess):
    """One ``python -m sample_order_app.<module>`` subprocess; its stdout lines can be awaited."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, log: IO[bytes]) -> None:
        super().__init__(name, proc)
        self.log = log

    def exit_detail(self) -> str:
        return f"; see its log {self.log.name}"

    async def stop(self) -> None:
        """SIGTERM by PID (graceful), SIGKILL if it lingers; then close its log."""
        await super().stop()
        self.log.close()


class Fleet:
    """The services of one test, on the test's namespace; stopped at the end of the test."""

    def __init__(self, nats_url: str, prefix: str, log_dir: Path) -> None:
        self.nats_url = nats_url
        self.prefix = prefix
        self.log_dir = log_dir
        self.services: list[Service] = []

    async def start(self, name: str, module: str, *args: str) -> Service:
        """Start ``python -m sample_order_app.<module>`` and wait for its readiness line."""
        log = (self.log_dir / f"{name}.log").open("wb")
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            f"sample_order_app.{module}",
            "--prefix",
            self.prefix,
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            env=child_env(NATS_URL=self.nats_url),
        )
        service = Service(name, proc, log)
        self.services.append(service)
        await service.wait_for_line(lambda line: line.startswith("ready"), READY_TIMEOUT)
        return service

    async def start_saga(
        self, seed: dict[str, int], *, shipping: tuple[str, ...] | None = (), attempts: int = 3
    ) -> None:
        """Inventory (seeded), three providers, shipping and the orchestrator, all at once.

        ``shipping`` holds the shipping service's extra flags; None leaves it to the test.
        """
        starts = [
            self.start("inventory", "inventory", *(f"--seed={k}={v}" for k, v in seed.items())),
            self.start(
                "orchestrator",
                "orchestrator",
                "--providers",
                ",".join(PROVIDER_PRICES),
                "--quote-timeout",
                "1",
                "--shipping-attempts",
                str(attempts),
                "--shipping-retry-interval",
                "0.1",
            ),
        ]
        if shipping is not None:
            starts.append(self.start("shipping", "shipping", *shipping))
        starts += [
            self.start(
                f"provider-{name}",
                "provider",
                "--name",
                name,
                "--price",
                str(price),
                "--latency",
                "0.05",
                "--slow-latency",
                "10",
            )
            for name, price in PROVIDER_PRICES.items()
        ]
        await asyncio.gather(*starts)

    async def place_order(self, order_id: str, sku: str, quantity: int, *flags: str) -> None:
        """Place an order through the storefront process (a plain nats-py publish)."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sample_order_app.storefront",
            "--prefix",
            self.prefix,
            "--order-id",
            order_id,
            "--sku",
            sku,
            "--quantity",
            str(quantity),
            *flags,
            stdout=asyncio.subprocess.PIPE,
            env=child_env(NATS_URL=self.nats_url),
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
        assert 0 == proc.returncode
        assert out.decode().startswith(f"placed {order_id}")

    async def stop_all(self) -> None:
        """Stop every service gracefully, by PID."""
        await asyncio.gather(*(s.stop() for s in self.services), return_exceptions=True)


@pytest.fixture
async def fleet(nats_url: str, prefix: str, tmp_path: Path) -> AsyncIterator[Fleet]:
    """A fleet of sample services on the test's namespace."""
    services = Fleet(nats_url, prefix, tmp_path)
    try:
        yield services
    finally:
        await services.stop_all()


class TestOrderOutcomes:
    async def test_order_ships_with_the_cheapest_provider(self, fleet, client, stock_kv):
        """An order in stock reserves its units and ships with the cheapest provider."""
        await fleet.start_saga({"widget": 10})
        await fleet.place_order("order-1", "widget", 3)
        result = await order_result(client, "order-1")
        assert ("shipped", "budget", 5.0) == (result.status, result.provider, result.price)
        assert result.tracking_id.startswith("BUD-")
        assert 7 == await stock.available(stock_kv, "widget")

    async def test_services_stop_gracefully_on_sigterm(self, fleet):
        """Every service finishes its shutdown and exits 0 on SIGTERM."""
        await fleet.start_saga({"widget": 1})
        await fleet.stop_all()
        assert [0] * 6 == [s.proc.returncode for s in fleet.services]
        assert all(s.lines[-1].startswith("stopped") for s in fleet.services)

    async def test_insufficient_stock_rejects_and_changes_nothing(self, fleet, client, stock_kv):
        """An order larger than the stock ends as rejected with the reason, stock untouched."""
        await fleet.start_saga({"gizmo": 2})
        await fleet.place_order("order-2", "gizmo", 5)
        result = await order_result(client, "order-2")
        assert "rejected" == result.status
        assert "insufficient stock of 'gizmo': 5 ordered, 2 available" == result.reason
        assert 2 == await stock.available(stock_kv, "gizmo")

    async def test_shipment_failure_is_retried_then_compensated(self, fleet, client, stock_kv):
        """A shipment that always fails is retried, then the reservation is restored."""
        await fleet.start_saga({"sprocket": 4}, attempts=3)
        before = await stock.available(stock_kv, "sprocket")
        await fleet.place_order("fail-ship-3", "sprocket", 2)
        result = await order_result(client, "fail-ship-3")
        assert "failed" == result.status
        assert "compensated: stock restored" in result.reason
        assert before == await stock.available(stock_kv, "sprocket")
        history = await client.get_history("fail-ship-3")
        attempts = [
            e
            for e in history
            if type(e).__name__ == "TaskScheduled" and e.name == "register_shipment"
        ]
        assert [1, 2, 3] == [e.attempt for e in attempts]

    async def test_shipping_flag_in_the_order_forces_failure(self, fleet, client, stock_kv):
        """faults.fail_shipping in the order fails shipping like a fail-ship id does."""
        await fleet.start_saga({"bolt": 6}, attempts=2)
        await fleet.place_order("order-4", "bolt", 1, "--fail-shipping")
        result = await order_result(client, "order-4")
        assert "failed" == result.status
        assert 6 == await stock.available(stock_kv, "bolt")

    async def test_a_timed_out_provider_is_skipped(self, fleet, client, stock_kv):
        """A provider slower than the quote timeout is skipped; the next cheapest ships."""
        await fleet.start_saga({"doohickey": 5})
        await fleet.place_order("order-5", "doohickey", 1, "--slow-provider", "budget")
        result = await order_result(client, "order-5")
        assert ("shipped", "parcelly", 7.0) == (result.status, result.provider, result.price)
        assert {"budget": "timed out after 1s"} == result.skipped_providers
        assert 4 == await stock.available(stock_kv, "doohickey")

    async def test_no_quotes_at_all_compensates(self, fleet, client, stock_kv):
        """When every provider fails, the order fails and its stock is restored."""
        await fleet.start_saga({"flange": 3})
        flags = [f for name in PROVIDER_PRICES for f in ("--failing-provider", name)]
        await fleet.place_order("order-6", "flange", 2, *flags)
        result = await order_result(client, "order-6")
        assert "failed" == result.status
        assert sorted(PROVIDER_PRICES) == sorted(result.skipped_providers)
        assert 3 == await stock.available(stock_kv, "flange")


class TestInventory:
    async def test_reserve_and_restore_are_idempotent_per_order(self, stock_kv):
        """Reserving or restoring twice for one order changes the stock once."""
        await stock.seed_stock(stock_kv, {"nut": 10})
        first = await stock.reserve(stock_kv, "o-1", "nut", 4)
        again = await stock.reserve(stock_kv, "o-1", "nut", 4)
        assert (True, 10, 6) == (first.reserved, first.available_before, first.available_after)
        assert (True, 6) == (again.reserved, again.available_after)
        assert [4, 0] == [await stock.restore(stock_kv, "o-1", "nut") for _ in range(2)]
        assert 10 == await stock.available(stock_kv, "nut")

    async def test_concurrent_reservations_never_oversell(self, stock_kv):
        """Competing reservations compare-and-set one key, so exactly the stock is sold."""
        await stock.seed_stock(stock_kv, {"washer": 5})
        results = await asyncio.gather(
            *(stock.reserve(stock_kv, f"o-{i}", "washer", 1) for i in range(12))
        )
        assert 5 == sum(r.reserved for r in results)
        assert 0 == await stock.available(stock_kv, "washer")


class TestCrashes:
    @pytest.mark.slow
    async def test_killed_shipping_service_is_replaced_and_the_order_ships(
        self, fleet, client, stock_kv, nats_url, prefix
    ):
        """A shipping process killed mid-activity loses its lease; a new one finishes the order."""
        await fleet.start_saga({"crate": 10}, shipping=None)
        hanging = await fleet.start(
            "shipping-1", "shipping", "--activity-lease", "2", "--hang-prefix", "crash-"
        )
        nc = await nats.connect(nats_url)
        started: asyncio.Queue[str] = asyncio.Queue()

        async def on_started(msg: nats.aio.msg.Msg) -> None:
            await started.put(msg.data.decode())

        await nc.subscribe(started_subject(prefix), cb=on_started)
        await nc.flush()
        try:
            await fleet.place_order("crash-7", "crate", 2)
            assert "crash-7" == await asyncio.wait_for(started.get(), ORDER_TIMEOUT)
            await hanging.kill()
            assert -signal.SIGKILL == hanging.proc.returncode
            await fleet.start("shipping-2", "shipping", "--activity-lease", "2")
            result = await order_result(client, "crash-7")
            assert "crash-7" == await asyncio.wait_for(started.get(), 5)
        finally:
            await nc.close()
        assert "shipped" == result.status
        assert 8 == await stock.available(stock_kv, "crate")


class TestDemo:
    @pytest.mark.slow
    @pytest.mark.timeout(120)
    async def test_demo_covers_every_outcome(self):
        """``python -m sample_order_app demo`` exits 0 and shows every outcome, with each
        order's SKU and quantity, and says which rejections and failures are staged."""
        env = child_env()
        env.pop("NATS_URL", None)  # the demo embeds its own nats-server
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sample_order_app",
            "demo",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 90)
        text = out.decode()
        assert 0 == proc.returncode, text
        for outcome in ("shipped", "rejected", "compensated: stock restored", "timed out"):
            assert outcome in text
        assert "OTEL_EXPORTER_OTLP_ENDPOINT" in text
        lines = text.splitlines()
        header = next(line.split() for line in lines if line.startswith("order "))
        assert ["order", "sku", "qty", "stock", "outcome"] == header[:5]
        rows = {line.split()[0].rsplit("-", 1)[-1]: line for line in lines if "-100" in line}
        assert ["gizmo", "5", "2", "->", "2", "rejected"] == rows["1003"].split()[1:7]
        for staged in ("1003", "1004", "1006"):
            assert "(staged)" in rows[staged], rows[staged]
        assert "(staged)" not in rows["1001"]
        assert any("staged" in line and "part of the show" in line for line in lines)
