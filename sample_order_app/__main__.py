"""``python -m sample_order_app demo``: the whole saga on one machine, every outcome in a table.

Starts an embedded nats-server when NATS_URL is unset, runs every service as its own process,
places a batch of orders through the storefront process and waits for their workflows. With
``--console`` it also runs ``jetloom serve-http`` (the web console at its URL) and keeps
everything serving after the table until Ctrl-C, so every order can be looked at.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import msgspec
import nats
import structlog

from brokers import EmbeddedNatsServer
from engine import WorkflowClient, WorkflowState, WorkflowStatus
from sample_order_app import stock
from sample_order_app.model import Faults, Order, OrderResult
from sample_order_app.provider import DEMO_PROVIDERS
from sample_order_app.storefront import StartEvent

REPO_ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 30.0
ORDER_TIMEOUT = 40.0



@dataclass(frozen=True)
class DemoOrder:
    """One order of the demo batch, the stock its SKU starts with and what should happen."""

    order_id: str
    stock: int
    order: Order
    expected: str
    story: str


def demo_orders(tag: str) -> list[DemoOrder]:
    """The batch: each order has its own SKU, so its stock before/after is its own doing."""
    every = tuple(DEMO_PROVIDERS)
    return [
        DemoOrder(f"order-1001{tag}", 10, Order("widget", 2), "shipped", "ships"),
        DemoOrder(f"order-1002{tag}", 6, Order("gadget", 3), "shipped", "ships"),
        DemoOrder(f"order-1003{tag}", 2, Order("gizmo", 5), "rejected", "not enough stock"),
        DemoOrder(
            f"fail-ship-1004{tag}", 4, Order("sprocket", 1), "failed", "shipping fails: compensate"
        ),
        DemoOrder(
            f"order-1005{tag}",
            8,
            Order("doohickey", 1, faults=Faults(slow_providers=["budget"])),
            "shipped",
            "budget times out, skipped",
        ),
        DemoOrder(
            f"order-1006{tag}",
            3,
            Order("flange", 2, faults=Faults(failing_providers=list(every))),
            "failed",
            "no quotes: compensate",
        ),
        DemoOrder(f"order-1007{tag}", 5, Order("bracket", 5), "shipped", "ships the last units"),
        DemoOrder(f"order-1008{tag}", 9, Order("gasket", 4), "shipped", "ships"),
    ]


class Service:
    """A service subprocess whose readiness line we wait for; stderr goes to a log file."""

    ready_line = b"ready"
    """How the line that says the service is ready starts."""

    def __init__(self, name: str, module: str, args: list[str], log_dir: Path) -> None:
        self.name = name
        self.module = module
        self.args = args
        self.log_path = log_dir / f"{name.replace(' ', '-')}.log"
        self.proc: asyncio.subprocess.Process | None = None
        self.ready_text = ""
        """The readiness line, once seen."""
        self._log: IO[bytes] | None = None

    async def start(self, env: dict[str, str]) -> None:
        """Spawn ``python -m <module>`` (a module of this package unless dotted)."""
        self._log = self.log_path.open("wb")
        module = self.module if "." in self.module else f"sample_order_app.{self.module}"
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            module,
            *self.args,
            stdout=asyncio.subprocess.PIPE,
            stderr=self._log,
            env=env,
        )

    async def wait_ready(self, timeout: float) -> None:
        """Wait for the ``ready`` line the service prints once its runtime has started."""
        assert self.proc is not None and self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                line = await self.proc.stdout.readline()
                if not line:
                    raise RuntimeError(f"{self.name} exited early; see {self.log_path}")
                if line.startswith(self.ready_line):
                    self.ready_text = line.decode().strip()
                    return

    async def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM by PID (graceful), SIGKILL if it does not stop in time."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._log is not None:
            self._log.close()


class ConsoleService(Service):
    """``jetloom serve-http``: Dapr's workflow API and the web console, on 127.0.0.1:port."""

    ready_line = b"jetloom serve-http: listening"

    def __init__(self, prefix: str, port: int, log_dir: Path) -> None:
        args = ["serve-http", "--prefix", prefix, "--port", str(port)]
        super().__init__("console", "engine.cli", args, log_dir)

    @property
    def url(self) -> str:
        """The console's address, as serve-http printed it (port 0 picks a free one)."""
        address = self.ready_text.split("listening on ", 1)[-1].split(" ", 1)[0]
        return address.rstrip("/") + "/"


async def _serve_until_stopped(console: ConsoleService) -> None:
    """Keep everything running until Ctrl-C or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"\nThe console keeps serving at {console.url} (Ctrl-C stops the demo).", flush=True)
    await stop.wait()


def _services(prefix: str, orders: list[DemoOrder], log_dir: Path) -> list[Service]:
    common = ["--prefix", prefix]
    seeds = [f"{o.order.sku}={o.stock}" for o in orders]
    services = [
        Service("inventory", "inventory", [*common, *(f"--seed={s}" for s in seeds)], log_dir),
        Service("shipping", "shipping", [*common, "--failure-rate", "0.2"], log_dir),
        Service(
            "orchestrator",
            "orchestrator",
            [*common, "--providers", ",".join(DEMO_PROVIDERS), "--quote-timeout", "1.5"],
            log_dir,
        ),
    ]
    for name, flags in DEMO_PROVIDERS.items():
        services.append(
            Service(f"provider {name}", "provider", [*common, "--name", name, *flags], log_dir)
        )
    return services


def _child_env(nats_url: str) -> dict[str, str]:
    env = dict(os.environ, NATS_URL=nats_url)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + path if path else "")
    return env


async def _place_orders(prefix: str, orders: list[DemoOrder], env: dict[str, str]) -> None:
    batch = b"".join(msgspec.json.encode(StartEvent(o.order_id, o.order)) + b"\n" for o in orders)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sample_order_app.storefront",
        "--prefix",
        prefix,
        "--batch",
        "-",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    out, _ = await asyncio.wait_for(proc.communicate(batch), 30)
    if proc.returncode != 0:
        raise RuntimeError(f"the storefront failed with exit code {proc.returncode}")
    print(f"storefront placed {len(out.splitlines())} orders on {prefix}.start.order_processing")


def _result_of(state: WorkflowState) -> OrderResult | None:
    if state.runtime_status is not WorkflowStatus.COMPLETED or not state.serialized_output:
        return None
    return msgspec.json.decode(state.serialized_output, type=OrderResult)


def _outcome(state: WorkflowState) -> str:
    result = _result_of(state)
    return result.status if result else state.runtime_status.name.lower()


def _duration(state: WorkflowState) -> float:
    return (state.last_updated_at - state.created_at).total_seconds()


def _note(demo: DemoOrder, state: WorkflowState) -> str:
    result = _result_of(state)
    if result is None:
        details = state.failure_details
        return details.message if details else "the workflow did not complete"
    notes = [result.reason] if result.reason else []
    skipped = [f"{name} ({why.split(':')[0]})" for name, why in result.skipped_providers.items()]
    if skipped:
        notes.append("skipped " + ", ".join(skipped))
    return "; ".join(notes) or demo.story


async def _wait_all(client: WorkflowClient, orders: list[DemoOrder]) -> dict[str, WorkflowState]:
    """Wait for every order, printing a line as each one finishes."""

    async def wait(demo: DemoOrder) -> tuple[DemoOrder, WorkflowState]:
        state = await client.wait_for_workflow_completion(demo.order_id, timeout=ORDER_TIMEOUT)
        return demo, state

    states: dict[str, WorkflowState] = {}
    for done, next_done in enumerate(asyncio.as_completed([wait(o) for o in orders]), 1):
        demo, state = await next_done
        states[demo.order_id] = state
        result = _result_of(state)
        via = f" via {result.provider} at {result.price:.2f}" if result and result.provider else ""
        print(
            f"  [{done}/{len(orders)}] {demo.order_id:<22} {_outcome(state):<9}{via} "
            f"({_duration(state):.1f}s)",
            flush=True,
        )
    return states


STAGED_NOTE = (
    "Orders marked (staged) are part of the show: the demo asks for more than the stock, makes "
    "shipping fail and providers fail or time out, to show rejection, retries and compensation."
)


def _print_table(
    orders: list[DemoOrder], states: dict[str, WorkflowState], after: dict[str, int | None]
) -> None:
    header = (
        "order", "sku", "qty", "stock", "outcome", "provider", "price", "duration",
        "what happened",
    )
    rows = []
    for demo in orders:
        state = states[demo.order_id]
        result = _result_of(state)
        price = "" if result is None or result.price is None else f"{result.price:.2f}"
        outcome = _outcome(state)
        if outcome != demo.expected:
            outcome += f" (expected {demo.expected})"
        elif outcome != "shipped":
            outcome += " (staged)"
        rows.append(
            (
                demo.order_id,
                demo.order.sku,
                str(demo.order.quantity),
                f"{demo.stock} -> {after[demo.order.sku]}",
                outcome,
                result.provider if result else "",
                price,
                f"{_duration(state):.1f}s",
                _note(demo, state),
            )
        )
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        cells = [str(c).ljust(w) for c, w in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]))
    print()
    print(STAGED_NOTE)


async def run_demo(prefix: str, keep_logs: bool = False, console_port: int | None = None) -> int:
    """Run the demo against NATS_URL (or an embedded server); returns the exit code.

    With ``console_port`` the web console serves on 127.0.0.1 at that port from the start,
    and after the table until Ctrl-C.
    """
    server: EmbeddedNatsServer | None = None
    nats_url = os.environ.get("NATS_URL", "")
    tag = ""
    if not nats_url:
        server = EmbeddedNatsServer().start()
        nats_url = server.url
        print(f"started an embedded nats-server at {nats_url}")
    else:
        tag = "-" + secrets.token_hex(2)  # a shared server may hold earlier demo orders
        print(f"using the nats-server at NATS_URL={nats_url}")
    log_dir = Path(tempfile.mkdtemp(prefix="jetloom-demo-logs-"))
    orders = demo_orders(tag)
    services = _services(prefix, orders, log_dir)
    console = None if console_port is None else ConsoleService(prefix, console_port, log_dir)
    if console is not None:
        services.append(console)
    env = _child_env(nats_url)
    began = time.monotonic()
    try:
        for service in services:
            await service.start(env)
        await asyncio.gather(*(s.wait_ready(READY_TIMEOUT) for s in services))
        print(
            f"{len(services)} services ready ({', '.join(s.name for s in services)}); "
            f"logs in {log_dir} (removed after a clean run unless --keep-logs)"
        )
        if console is not None:
            print(f"web console: {console.url} (open it to watch the orders)", flush=True)
        nc = await nats.connect(nats_url)
        client = await WorkflowClient.connect(nats_url, prefix=prefix)
        try:
            kv = await stock.stock_bucket(nc.jetstream(), prefix)
            await _place_orders(prefix, orders, env)
            states = await _wait_all(client, orders)
            after = {o.order.sku: await stock.available(kv, o.order.sku) for o in orders}
        finally:
            await client.close()
            await nc.close()
        print()
        _print_table(orders, states, after)
        print()
        print(f"{len(orders)} orders in {time.monotonic() - began:.1f}s.")
        print(
            "Traces: set OTEL_EXPORTER_OTLP_ENDPOINT (e.g. http://localhost:4318 for Jaeger) "
            "to send each saga's trace to Jaeger."
        )
        unexpected = [o.order_id for o in orders if _outcome(states[o.order_id]) != o.expected]
        if unexpected:
            print(f"unexpected outcomes: {', '.join(unexpected)}", file=sys.stderr)
            keep_logs = True
        if console is not None:
            await _serve_until_stopped(console)
        return 1 if unexpected else 0
    except BaseException:
        keep_logs = True
        raise
    finally:
        await asyncio.gather(*(s.stop() for s in services), return_exceptions=True)
        if server is not None:
            server.cleanup()
        if keep_logs:
            print(f"service logs kept in {log_dir}", file=sys.stderr)
        else:
            shutil.rmtree(log_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """The ``python -m sample_order_app`` command line."""
    parser = argparse.ArgumentParser(prog="python -m sample_order_app", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run every service and a batch of orders")
    demo.add_argument("--prefix", default="jetloom", help="namespace of the demo")
    demo.add_argument("--keep-logs", action="store_true", help="keep the services' logs")
    demo.add_argument(
        "--console",
        nargs="?",
        type=int,
        const=3500,
        metavar="PORT",
        help="serve the web console on 127.0.0.1:PORT (default 3500) and keep serving after "
        "the demo until Ctrl-C",
    )
    args = parser.parse_args(argv)
    # The demo's own connections log only real trouble; the services log to their files.
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR),
    )
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(run_demo(args.prefix, args.keep_logs, args.console))
    return 130


if __name__ == "__main__":
    sys.exit(main())
