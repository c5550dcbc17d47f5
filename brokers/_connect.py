"""Connecting to NATS: reconnect forever, credentials from the environment, refusals reported
at once and in words.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from typing import Any

import nats
import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client as NATS

from brokers._auth import describe_options, env_defaults
from brokers._subjects import nats_url


async def connect_nats(url: str | None = None, **options: Any) -> NATS:
    """Connect with reconnection forever (a worker resumes whenever the server returns).

    ``url`` defaults to NATS_URL, then ``nats://127.0.0.1:4222``. Credentials that neither
    ``options`` nor the URL give come from NATS_USER/NATS_PASSWORD, NATS_TOKEN, NATS_CREDS or
    NATS_NKEY, and without a ``tls`` option NATS_CA, NATS_CERT and NATS_KEY make one (see
    ``NatsAuth``).
    """
    servers = nats_url(url)
    opts: dict[str, Any] = {
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.5,
        "connect_timeout": 5,
        "error_cb": _on_error,
        "reconnected_cb": _on_reconnected,
    }
    opts.update(env_defaults(options, servers=servers))
    nc = NATS()

    async def on_disconnected() -> None:
        if not (nc.is_closed or nc.is_draining):  # a deliberate close is no outage
            _log.warning("nats.disconnected")

    opts.setdefault("disconnected_cb", on_disconnected)
    # Reconnecting forever also covers the first connection, so refused credentials or a
    # failed TLS handshake would retry forever: watch for either and report it at once.
    refused: asyncio.Future[nats.errors.Error] = asyncio.get_running_loop().create_future()
    report_error = opts["error_cb"]

    def refusal(exc: BaseException) -> nats.errors.Error:
        if isinstance(exc, ssl.SSLError):
            return NatsTlsError(
                f"TLS with NATS at {redact_url(servers)} failed ({_tls_detail(exc)}); check "
                "the CA that signed the server's certificate (tls_ca, NATS_CA) and the client "
                "certificate the server may require (tls_cert/tls_key, NATS_CERT/NATS_KEY)",
                exc,
            )
        return NatsAuthorizationError(
            f"NATS at {redact_url(servers)} refused the credentials "
            f"({describe_options(opts, servers=servers)}: {str(exc) or type(exc).__name__}); "
            "check the user/password, token, nkey seed or creds file (NATS_USER/NATS_PASSWORD, "
            "NATS_TOKEN, NATS_NKEY, NATS_CREDS)"
        )

    async def on_error(exc: Exception) -> None:
        if not refused.done() and not nc.is_connected and _is_fatal(exc):
            refused.set_result(refusal(exc))
        await report_error(exc)

    opts["error_cb"] = on_error
    connecting: asyncio.Future[Any] = asyncio.ensure_future(
        nc.connect(servers=servers.split(","), **opts)
    )
    waiting: set[asyncio.Future[Any]] = {connecting, refused}
    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    if not connecting.done():
        connecting.cancel()
        with contextlib.suppress(BaseException):
            await connecting
        with contextlib.suppress(Exception):
            await nc.close()
        raise refused.result()
    try:
        await connecting  # raises the connection's own error, if any
    except Exception as exc:
        if refused.done():
            raise refused.result() from None
        if _is_fatal(exc):
            raise refusal(exc) from None
        raise
    return nc


class NatsAuthorizationError(nats.errors.Error):
    """The server refused this connection's credentials."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class NatsTlsError(nats.errors.Error):
    """The TLS handshake with the server failed (unknown CA, missing client certificate)."""

    def __init__(self, message: str, ssl_error: ssl.SSLError) -> None:
        super().__init__(message)
        self.message = message
        self.ssl_error = ssl_error

    def __str__(self) -> str:
        return self.message


def _is_fatal(exc: BaseException) -> bool:
    """Errors that retrying the same connection cannot fix: refused credentials, bad TLS."""
    if isinstance(exc, ssl.SSLError):
        return True
    text = str(exc).lower()
    return isinstance(exc, nats.errors.AuthorizationError) or "authorization" in text


def _tls_detail(exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    return str(exc.reason or exc)


def redact_url(url: str) -> str:
    """A server URL list without user, password or token (safe to print)."""
    return re.sub(r"//[^@/,]*@", "//", url)


_log = structlog.get_logger("jetloom.nats")


async def _on_error(exc: Exception) -> None:
    _log.warning("nats.error", error=str(exc) or type(exc).__name__)


async def _on_reconnected() -> None:
    _log.info("nats.reconnected")


Connection = NATS
"""A connection to NATS (nats-py's client), as ``connect_nats`` returns it."""
