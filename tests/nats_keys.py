"""NATS nkeys and JWTs made by the tests, for servers with nkey users or decentralized auth.

A NATS JWT is ``header.claims.signature``, each part base64url without padding; the header is
``{"typ":"JWT","alg":"ed25519-nkey"}`` and the signature is the issuer's ed25519 signature of
``header.claims``. The operator signs itself and the accounts, an account signs its users
(nats-io/jwt v2). ``operator_setup`` writes what ``nsc`` would: a server configuration with a
memory resolver preloaded with the accounts, and a ``.creds`` file for a user.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nkeys


def new_keypair(prefix: int) -> nkeys.KeyPair:
    """A fresh key pair of a role (``nkeys.PREFIX_BYTE_USER``, ``..._ACCOUNT``, ...)."""
    return nkeys.from_seed(nkeys.encode_seed(os.urandom(32), prefix))


def public_key(keys: nkeys.KeyPair) -> str:
    """The public key (``U...``, ``A...``, ``O...``)."""
    return str(keys.public_key.decode())


def seed(keys: nkeys.KeyPair) -> str:
    """The seed (``SU...``, ...): the secret."""
    return str(keys.seed.decode())


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def encode_jwt(issuer: nkeys.KeyPair, subject: str, name: str, nats: dict[str, Any]) -> str:
    """A NATS JWT about ``subject`` signed by ``issuer``."""
    claims: dict[str, Any] = {
        "jti": "",
        "iat": int(time.time()),
        "iss": public_key(issuer),
        "name": name,
        "sub": subject,
        "nats": {**nats, "version": 2},
    }
    digest = hashlib.sha256(json.dumps(claims, sort_keys=True).encode()).digest()
    claims["jti"] = base64.b32encode(digest).rstrip(b"=").decode()
    signed = _b64(b'{"typ":"JWT","alg":"ed25519-nkey"}') + "." + _b64(json.dumps(claims).encode())
    return signed + "." + _b64(issuer.sign(signed.encode()))


def creds_text(user_jwt: str, user_seed: str) -> str:
    """A ``.creds`` file as ``nsc generate creds`` writes it."""
    return (
        "-----BEGIN NATS USER JWT-----\n"
        f"{user_jwt}\n"
        "------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{user_seed}\n"
        "------END USER NKEY SEED------\n\n"
        "*************************************************************\n"
    )


_UNLIMITED = {
    "subs": -1,
    "data": -1,
    "payload": -1,
    "imports": -1,
    "exports": -1,
    "wildcards": True,
    "conn": -1,
    "leaf": -1,
}


@dataclass(frozen=True)
class OperatorSetup:
    """Decentralized auth: the server's configuration and a user's ``.creds`` file."""

    config: str
    """nats-server configuration text (operator, system account, memory resolver)."""
    creds: Path
    """The ``.creds`` file of a user of the JetStream-enabled account."""
    other_creds: Path
    """A ``.creds`` file of a user signed by an account the server does not know."""


def operator_setup(folder: Path) -> OperatorSetup:
    """An operator, a system account, an application account with JetStream, a user in it,
    and a user of an unknown account; the two ``.creds`` files are written to ``folder``."""
    operator = new_keypair(nkeys.PREFIX_BYTE_OPERATOR)
    system = new_keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    app = new_keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    stranger = new_keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    operator_jwt = encode_jwt(
        operator,
        public_key(operator),
        "jetloom-test",
        {"type": "operator", "system_account": public_key(system)},
    )
    accounts = {
        public_key(system): encode_jwt(
            operator, public_key(system), "SYS", {"type": "account", "limits": _UNLIMITED}
        ),
        public_key(app): encode_jwt(
            operator,
            public_key(app),
            "APP",
            {
                "type": "account",
                # JetStream is on for an account whose storage limits are not zero.
                "limits": {
                    **_UNLIMITED,
                    "mem_storage": -1,
                    "disk_storage": -1,
                    "streams": -1,
                    "consumer": -1,
                },
            },
        ),
    }
    written = []
    for account, file_name in ((app, "worker.creds"), (stranger, "stranger.creds")):
        user = new_keypair(nkeys.PREFIX_BYTE_USER)
        user_jwt = encode_jwt(
            account,
            public_key(user),
            "worker",
            {"type": "user", "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1},
        )
        path = folder / file_name
        path.write_text(creds_text(user_jwt, seed(user)))
        path.chmod(0o600)
        written.append(path)
    preload = "\n".join(f"  {key}: {json.dumps(jwt)}" for key, jwt in accounts.items())
    config = (
        f"operator: {json.dumps(operator_jwt)}\n"
        f"system_account: {public_key(system)}\n"
        "resolver: MEMORY\n"
        f"resolver_preload: {{\n{preload}\n}}"
    )
    return OperatorSetup(config=config, creds=written[0], other_creds=written[1])


@dataclass(frozen=True)
class NkeyUser:
    """A user known to the server by its public nkey; the seed is in a file."""

    public_key: str
    seed_file: Path


def nkey_user(folder: Path, name: str = "worker") -> NkeyUser:
    """A fresh nkey user whose seed is written to ``folder/<name>.nk`` (mode 600)."""
    keys = new_keypair(nkeys.PREFIX_BYTE_USER)
    path = folder / f"{name}.nk"
    path.write_text(seed(keys) + "\n")
    path.chmod(0o600)
    return NkeyUser(public_key(keys), path)
