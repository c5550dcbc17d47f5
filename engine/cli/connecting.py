"""Connecting the command line to NATS: ``--nats-url``, ``--prefix``, credentials and TLS.

A command fails fast with one error that says what to do (a runtime reconnects forever
instead); the connection, and what may go wrong on it, is brokers' business.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from brokers import (
    CONNECTION_LOST_ERRORS,
    NATS_AUTH_ENVIRONMENT,
    NO_JETSTREAM_ERRORS,
    InvalidNatsAuthError,
    JetStreamBroker,
    NatsAuth,
    NatsAuthorizationError,
    NatsHungUpError,
    NatsTlsError,
    NatsUnreachableError,
    RequestTimeoutError,
    Subjects,
    check_reachable,
    connect_fail_fast,
    nats_url,
    redact_url,
)
from engine import WorkflowClient
from engine.cli.errors import CliError


def nats_url_of(args: argparse.Namespace) -> str:
    """``--nats-url``, else NATS_URL, else the default URL."""
    return nats_url(args.nats_url)


def nats_auth(args: argparse.Namespace) -> NatsAuth:
    """The credentials and TLS files of ``--user``, ``--creds``, ``--tlsca``, ...; each option
    not given falls back to its environment variable (NATS_USER, NATS_CREDS, NATS_CA, ...),
    as with the nats CLI."""
    given = {
        name: getattr(args, name, None) or os.environ.get(variable) or None
        for name, variable in NATS_AUTH_ENVIRONMENT.items()
    }
    try:
        return NatsAuth(**given)
    except InvalidNatsAuthError as exc:
        raise CliError(str(exc)) from None


def auth_options(args: argparse.Namespace) -> dict[str, Any]:
    """``nats.connect`` options for the credentials and TLS files of the command line."""
    try:
        return nats_auth(args).connect_options()
    except InvalidNatsAuthError as exc:
        raise CliError(str(exc)) from None


def check_prefix(args: argparse.Namespace) -> None:
    """A CliError naming ``--prefix`` when it cannot be a prefix."""
    try:
        Subjects(args.prefix)
    except ValueError as exc:
        raise CliError(f"--prefix: {exc}") from None


def _unreachable(url: str) -> CliError:
    return CliError(
        f"cannot connect to NATS at {redact_url(url)}; start a server there (nats-server -js), "
        "run 'jetloom dev' (it embeds one), or point --nats-url / NATS_URL at yours"
    )


def _tls_failed(url: str, exc: ssl.SSLError) -> CliError:
    detail = exc.reason or str(exc)
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = f"certificate verify failed: {exc.verify_message}"
    return CliError(
        f"TLS with NATS at {redact_url(url)} failed ({detail}); check --tlsca "
        "(NATS_CA: the CA that signed the server's certificate) and --tlscert/--tlskey "
        "(NATS_CERT/NATS_KEY: the client certificate the server may require)"
    )


@contextlib.contextmanager
def _connect_errors(url: str) -> Iterator[None]:
    """Each way a connection to ``url`` fails, as one CliError that says what to do."""
    try:
        yield
    except NatsAuthorizationError as exc:
        raise CliError(str(exc)) from None
    except NatsTlsError as exc:
        raise _tls_failed(url, exc.ssl_error) from None
    except NatsHungUpError:
        raise CliError(
            f"NATS at {redact_url(url)} closed the connection before it was established; a "
            "server that requires a TLS client certificate does that: give --tlscert and "
            "--tlskey (NATS_CERT, NATS_KEY)"
        ) from None
    except NatsUnreachableError:
        raise _unreachable(url) from None


async def ensure_reachable(url: str, options: dict[str, Any]) -> None:
    """Connect once, failing fast, so a wrong URL, credential or TLS file is one clear error
    before a long-running command starts."""
    with _connect_errors(url):
        await check_reachable(url, **options)


@dataclass(frozen=True)
class Session:
    """A command's connection: the client, and a broker on the same connection for what the
    client does not offer (watching the KV bucket, consumer statistics)."""

    client: WorkflowClient
    broker: JetStreamBroker


@contextlib.asynccontextmanager
async def session(args: argparse.Namespace) -> AsyncIterator[Session]:
    """A client and broker on ``--nats-url`` / ``--prefix`` that fail fast when no server
    answers; NATS failures while the block runs become one CliError."""
    url = nats_url_of(args)
    check_prefix(args)
    options = auth_options(args)
    with _connect_errors(url):
        nc = await connect_fail_fast(url, **options)
    client = WorkflowClient(nc, prefix=args.prefix)
    shown = redact_url(url)
    try:
        yield Session(client, JetStreamBroker(nc, Subjects(args.prefix)))
    except NO_JETSTREAM_ERRORS:
        raise CliError(
            f"the NATS server at {shown} has no JetStream; start nats-server with -js "
            "(or use 'jetloom dev')"
        ) from None
    except CONNECTION_LOST_ERRORS:
        raise CliError(f"lost the connection to NATS at {shown}; is the server still up?") from None
    except RequestTimeoutError:
        raise CliError(f"NATS at {shown} did not answer in time; is JetStream healthy?") from None
    finally:
        with contextlib.suppress(Exception):
            await client.close()


@contextlib.asynccontextmanager
async def connected(args: argparse.Namespace) -> AsyncIterator[WorkflowClient]:
    """A client on ``--nats-url`` / ``--prefix`` that fails fast when no server answers."""
    async with session(args) as opened:
        yield opened.client
