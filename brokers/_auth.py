"""How a connection proves who it is to NATS and checks the server's TLS certificate.

``NatsAuth`` holds what the nats CLI takes as ``--user``/``--password``, ``--token``,
``--creds``, ``--nkey``, ``--tlscert``, ``--tlskey`` and ``--tlsca`` (environment
NATS_USER, NATS_PASSWORD, NATS_TOKEN, NATS_CREDS, NATS_NKEY, NATS_CERT, NATS_KEY, NATS_CA) and
turns it into ``nats.connect`` options. ``connect_nats`` fills what a caller leaves out from
those environment variables, so runtimes, clients and the CLI read the same ones.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

AUTH_OPTIONS = frozenset(
    {
        "user",
        "password",
        "token",
        "user_credentials",
        "nkeys_seed",
        "nkeys_seed_str",
        "signature_cb",
        "user_jwt_cb",
    }
)
"""``nats.connect`` options that authenticate; a caller giving any of them chooses how."""

ENVIRONMENT = {
    "user": "NATS_USER",
    "password": "NATS_PASSWORD",
    "token": "NATS_TOKEN",
    "creds": "NATS_CREDS",
    "nkey": "NATS_NKEY",
    "tls_cert": "NATS_CERT",
    "tls_key": "NATS_KEY",
    "tls_ca": "NATS_CA",
}
"""The environment variable of each ``NatsAuth`` field (the nats CLI's names)."""

OPTIONS = {
    "user": "--user",
    "password": "--password",
    "token": "--token",
    "creds": "--creds",
    "nkey": "--nkey",
    "tls_cert": "--tlscert",
    "tls_key": "--tlskey",
    "tls_ca": "--tlsca",
}
"""The ``jetloom`` option of each ``NatsAuth`` field (the nats CLI's names)."""

_AUTH_FIELDS = ("user", "password", "token", "creds", "nkey")
_TLS_FIELDS = ("tls_cert", "tls_key", "tls_ca")


class InvalidNatsAuthError(ValueError):
    """Credentials or TLS files that cannot be used as given (the message says which)."""


def _label(name: str) -> str:
    """A field as every way to give it: ``creds (--creds, NATS_CREDS)``."""
    return f"{name} ({OPTIONS[name]}, {ENVIRONMENT[name]})"


@dataclass(frozen=True)
class NatsAuth:
    """Credentials and TLS files for a NATS connection, as the nats CLI takes them.

    At most one way to authenticate: ``user`` with ``password``, ``token``, ``creds`` (a
    ``.creds`` file: user JWT and nkey seed) or ``nkey`` (a file holding an nkey seed, ``SU...``).
    TLS combines with any of them: ``tls_ca`` is the CA bundle that signed the server's
    certificate (without it, the system's CAs), ``tls_cert``/``tls_key`` a client certificate
    and its key. Secrets never show in ``repr`` or in error messages.

    ``WorkflowRuntime(url, connect_options=auth.connect_options())`` and
    ``WorkflowClient.connect(url, **auth.connect_options())`` use it.
    """

    user: str | None = None
    password: str | None = None
    token: str | None = None
    creds: str | Path | None = None
    nkey: str | Path | None = None
    tls_cert: str | Path | None = None
    tls_key: str | Path | None = None
    tls_ca: str | Path | None = None

    def __post_init__(self) -> None:
        if self.user is not None and self.password is None:
            raise InvalidNatsAuthError(
                f"{_label('user')} is set without {_label('password')}; "
                f"for a token use {_label('token')}"
            )
        if self.password is not None and self.user is None:
            raise InvalidNatsAuthError(
                f"{_label('password')} is set without {_label('user')}"
            )
        ways = [name for name in ("user", "token", "creds", "nkey") if getattr(self, name)]
        if len(ways) > 1:
            labels = [
                "user/password (--user/--password, NATS_USER/NATS_PASSWORD)"
                if name == "user"
                else _label(name)
                for name in ways
            ]
            raise InvalidNatsAuthError(
                f"more than one way to authenticate: {' and '.join(labels)}; give only one"
            )
        if self.tls_key is not None and self.tls_cert is None:
            raise InvalidNatsAuthError(
                f"{_label('tls_key')} is set without {_label('tls_cert')}"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> NatsAuth:
        """The credentials and TLS files named by NATS_USER, NATS_PASSWORD, NATS_TOKEN,
        NATS_CREDS, NATS_NKEY, NATS_CERT, NATS_KEY and NATS_CA (empty means unset)."""
        env = os.environ if environ is None else environ
        return cls(**{name: env.get(var) or None for name, var in ENVIRONMENT.items()})

    @property
    def authenticates(self) -> bool:
        """True when a way to authenticate is set."""
        return any(getattr(self, name) for name in _AUTH_FIELDS)

    @property
    def uses_tls_files(self) -> bool:
        """True when a CA, client certificate or key file is set."""
        return any(getattr(self, name) for name in _TLS_FIELDS)

    def connect_options(self) -> dict[str, Any]:
        """``nats.connect`` options: credentials, and ``tls`` when a TLS file is set.

        Raises:
            InvalidNatsAuthError: a file is missing or is not a certificate or key.
        """
        options: dict[str, Any] = {}
        if self.user is not None:
            options["user"] = self.user
            options["password"] = self.password
        if self.token:
            options["token"] = self.token
        if self.creds:
            options["user_credentials"] = _existing_file("creds", self.creds)
        if self.nkey:
            options["nkeys_seed"] = _existing_file("nkey", self.nkey)
        if self.uses_tls_files:
            options["tls"] = self.ssl_context()
        return options

    def ssl_context(self) -> ssl.SSLContext:
        """A client TLS context trusting ``tls_ca`` (else the system's CAs), presenting
        ``tls_cert``/``tls_key`` when set."""
        ca = _existing_file("tls_ca", self.tls_ca) if self.tls_ca else None
        try:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
        except ssl.SSLError as exc:
            raise InvalidNatsAuthError(
                f"{_label('tls_ca')} {ca!r} holds no usable CA certificate ({exc.reason or exc})"
            ) from None
        if self.tls_cert:
            cert = _existing_file("tls_cert", self.tls_cert)
            key = _existing_file("tls_key", self.tls_key) if self.tls_key else None
            try:
                context.load_cert_chain(cert, key)
            except ssl.SSLError as exc:
                raise InvalidNatsAuthError(
                    f"cannot use {_label('tls_cert')} {cert!r} with {_label('tls_key')} "
                    f"{key!r} as a client certificate ({exc.reason or exc})"
                ) from None
        return context

    def __repr__(self) -> str:
        shown = [
            f"{f.name}={'***' if f.name in ('password', 'token') else str(value)!r}"
            for f in fields(self)
            if (value := getattr(self, f.name)) is not None
        ]
        return f"NatsAuth({', '.join(shown)})"


def _existing_file(name: str, path: str | Path) -> str:
    if not Path(path).is_file():
        raise InvalidNatsAuthError(f"{_label(name)} {str(path)!r} is not a file")
    return str(path)


def url_has_credentials(servers: str) -> bool:
    """True when a URL of the comma-separated list carries a user, password or token."""
    for url in servers.split(","):
        url = url.strip()
        parts = urlsplit(url if "://" in url else f"nats://{url}")
        if parts.username or parts.password:
            return True
    return False


def _gives_auth(options: Mapping[str, Any], servers: str) -> bool:
    return any(options.get(name) is not None for name in AUTH_OPTIONS) or url_has_credentials(
        servers
    )


def with_default_auth(
    options: Mapping[str, Any], defaults: NatsAuth, *, servers: str
) -> dict[str, Any]:
    """``options`` plus what ``defaults`` says, for what ``options`` leaves out.

    Credentials are taken from ``defaults`` only when neither ``options`` nor the URLs
    authenticate; TLS only when ``options`` has no ``tls`` context.
    """
    merged = dict(options)
    if defaults.authenticates and not _gives_auth(options, servers):
        auth_only = NatsAuth(**{name: getattr(defaults, name) for name in _AUTH_FIELDS})
        merged.update(auth_only.connect_options())
    if defaults.uses_tls_files and options.get("tls") is None:
        merged["tls"] = defaults.ssl_context()
    return merged


def env_defaults(options: Mapping[str, Any], *, servers: str) -> dict[str, Any]:
    """``options`` completed from the NATS_* environment (``with_default_auth``).

    Only the variables of what ``options`` leaves out are read, so a caller that passes its own
    credentials is not troubled by unrelated ones in the environment.
    """
    chosen: tuple[str, ...] = ()
    if not _gives_auth(options, servers):
        chosen += _AUTH_FIELDS
    if options.get("tls") is None:
        chosen += _TLS_FIELDS
    env = {ENVIRONMENT[name]: os.environ.get(ENVIRONMENT[name], "") for name in chosen}
    return with_default_auth(options, NatsAuth.from_env(env), servers=servers)


def describe_options(options: Mapping[str, Any], *, servers: str) -> str:
    """How ``nats.connect`` options authenticate, without secrets (for error messages)."""
    creds = options.get("user_credentials")
    if creds is not None:
        return f"creds file {str(creds)!r}" if isinstance(creds, str | Path) else "credentials"
    seed = options.get("nkeys_seed")
    if seed is not None:
        return f"nkey seed file {str(seed)!r}"
    if options.get("nkeys_seed_str") is not None or options.get("signature_cb") is not None:
        return "an nkey seed"
    user = options.get("user")
    if user is not None:
        return f"user {user!r} with a password" if isinstance(user, str) else "a user callback"
    if options.get("token") is not None:
        return "a token"
    if url_has_credentials(servers):
        return "the credentials in the URL"
    return "no credentials"
