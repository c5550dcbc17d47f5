"""A tiny OTLP/HTTP receiver: stores each POST /v1/traces body in a directory.

Usage: python otlp_receiver.py <out_dir>; prints the port it listens on (loopback) and serves
until killed.
"""

from __future__ import annotations

import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

OUT = Path(sys.argv[1])


class Receiver(BaseHTTPRequestHandler):
    """Accepts OTLP/HTTP protobuf exports."""

    counter = 0

    def do_POST(self) -> None:
        """Record traces; accept (and drop) metrics."""
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path == "/v1/traces":
            Receiver.counter += 1
            (OUT / f"traces-{Receiver.counter:04d}.pb").write_bytes(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        """Quiet."""


server = HTTPServer(("127.0.0.1", 0), Receiver)
print(server.server_address[1], flush=True)
server.serve_forever()
