"""Authentication and permissions: a real nats-server with authorization, token auth and TLS.

Each test starts its own server on a free loopback port with a store under ``tmp_path``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import os
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path

import nats
import nats.errors
import pytest
from aiohttp import ClientSession

from brokers import NATS_AUTH_ENVIRONMENT as ENVIRONMENT
from brokers import NATS_AUTH_OPTIONS as OPTIONS
from brokers import (
    EmbeddedNatsServer,
    NatsAuth,
    NatsAuthorizationError,
    NatsTlsError,
    free_port,
)
from engine import WorkflowClient, WorkflowRuntime, WorkflowStatus
from engine.core.events import ExecutionCompleted
from tests.nats_keys import nkey_user, operator_setup
from tests.processes import LineProcess

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "sec"


# ------------------------------------------------------------------ permissions


def worker_publish(p: str = PREFIX) -> list[str]:
    """What a worker (runtime) and a full WorkflowClient publish to, for prefix ``p``."""
    big = p.upper()
    kv = f"KV_{p}_instances"
    streams = [f"{big}_HISTORY", f"{big}_WORK", f"{big}_DEADLETTER"]
    return [
        f"{p}.>",
        *(f"$JS.API.STREAM.CREATE.{s}" for s in [*streams, kv]),
        *(f"$JS.API.STREAM.INFO.{s}" for s in [*streams, kv]),
        *(f"$JS.API.STREAM.UPDATE.{s}" for s in streams),
        f"$JS.API.STREAM.PURGE.{big}_HISTORY",
        f"$JS.API.DIRECT.GET.{big}_HISTORY",
        f"$JS.API.STREAM.MSG.GET.{big}_HISTORY",
        f"$JS.API.STREAM.LEADER.STEPDOWN.{big}_WORK",
        f"$JS.API.CONSUMER.CREATE.{big}_WORK.>",
        f"$JS.API.CONSUMER.INFO.{big}_WORK.>",
        f"$JS.API.CONSUMER.MSG.NEXT.{big}_WORK.>",
        f"$JS.ACK.{big}_WORK.>",
        f"$KV.{p}_instances.>",
        f"$JS.API.STREAM.MSG.GET.{kv}",
        f"$JS.API.CONSUMER.CREATE.{kv}",
        f"$JS.API.CONSUMER.INFO.{kv}.>",
        f"$JS.API.CONSUMER.MSG.NEXT.{kv}.>",
        # heartbeats (brokers._heartbeat): the bucket of workers seen recently
        f"$KV.{p}_workers.>",
        f"$JS.API.STREAM.CREATE.KV_{p}_workers",
        f"$JS.API.STREAM.INFO.KV_{p}_workers",
        *object_store_publish(p),
    ]


def object_store_publish(p: str = PREFIX) -> list[str]:
    """What a worker or client publishes to for payloads over the inline size threshold."""
    obj = f"OBJ_{p}_payloads"
    return [
        f"$O.{p}_payloads.>",
        f"$JS.API.STREAM.CREATE.{obj}",
        f"$JS.API.STREAM.INFO.{obj}",
        f"$JS.API.STREAM.MSG.GET.{obj}",
        f"$JS.API.STREAM.PURGE.{obj}",
        f"$JS.API.CONSUMER.CREATE.{obj}",
        f"$JS.API.CONSUMER.CREATE.{obj}.>",
        "$JS.API.STREAM.NAMES",
        f"$JS.FC.{obj}.>",
    ]


def viewer_publish(p: str = PREFIX) -> list[str]:
    """What a read-only WorkflowClient (``create_streams=False``) publishes to."""
    kv = f"KV_{p}_instances"
    return [
        f"$JS.API.STREAM.INFO.{kv}",
        f"$JS.API.STREAM.MSG.GET.{kv}",
        f"$JS.API.CONSUMER.CREATE.{kv}",
        f"$JS.API.CONSUMER.INFO.{kv}.>",
        f"$JS.API.CONSUMER.MSG.NEXT.{kv}.>",
        f"$JS.API.DIRECT.GET.{p.upper()}_HISTORY",
    ]


def worker_subscribe(p: str = PREFIX) -> tuple[str, ...]:
    """What a worker subscribes to: replies, and the cancel requests its activities heed."""
    return ("_INBOX.>", f"{p}.cancel.*")


def starter_publish(p: str = PREFIX) -> list[str]:
    """What a publisher of start events (public protocol only) publishes to."""
    return [f"{p}.start.>"]


def _user(name: str, publish: list[str], subscribe: tuple[str, ...] = ("_INBOX.>",)) -> str:
    return (
        f"{{user: {json.dumps(name)}, password: {json.dumps(name + '-pw')}, permissions: "
        f"{{publish: {{allow: {json.dumps(publish)}}}, "
        f"subscribe: {{allow: {json.dumps(list(subscribe))}}}}}}}"
    )


ROLES_CONFIG = (
    "authorization { users = [\n"
    + ",\n".join(
        [
            _user("worker", worker_publish(), worker_subscribe()),
            _user("starter", starter_publish()),
            _user("viewer", viewer_publish()),
        ]
    )
    + "\n] }"
)


def cli_env(**extra: str) -> dict[str, str]:
    """This environment without NATS_URL, JETLOOM_PREFIX or any NATS credential variable."""
    dropped = {"NATS_URL", "JETLOOM_PREFIX", *ENVIRONMENT.values()}
    return {**{k: v for k, v in os.environ.items() if k not in dropped}, **extra}


async def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """``python -m engine.cli ARGS --no-color``: exit code, stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "engine.cli", *args, "--no-color",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=cli_env(**(env or {})), cwd=str(ROOT),
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def creds(name: str) -> dict[str, str]:
    """nats.connect options of a user of ROLES_CONFIG."""
    return {"user": name, "password": name + "-pw"}


class ErrorLog:
    """An ``error_cb`` (``record``) that keeps what the server reported and wakes waiters."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self._new = asyncio.Event()

    async def record(self, exc: Exception) -> None:
        """The ``error_cb`` (nats-py wants a coroutine function)."""
        self.errors.append(str(exc).lower())
        self._new.set()

    def violations(self) -> list[str]:
        """The permission violations reported so far."""
        return [e for e in self.errors if "permissions violation" in e]

    async def wait_for(self, fragment: str, timeout: float = 5) -> str:
        """The first reported error containing ``fragment`` (lower case)."""
        async with asyncio.timeout(timeout):
            while True:
                for error in self.errors:
                    if fragment in error:
                        return error
                self._new.clear()
                await self._new.wait()


def build_runtime(url: str, threshold: int = 256 * 1024, **options: object) -> WorkflowRuntime:
    """A runtime hosting ``greet`` (one activity) and ``flow`` (activity, timer, event)."""
    wfr = WorkflowRuntime(
        url, prefix=PREFIX, connect_options=dict(options), large_payload_threshold=threshold
    )

    @wfr.activity
    async def shout(ctx, name: str) -> str:
        return name.upper()

    @wfr.workflow
    async def greet(ctx, name: str) -> str:
        return "hello " + await ctx.call_activity(shout, input=name)

    @wfr.workflow
    async def flow(ctx, name: str) -> str:
        loud = await ctx.call_activity(shout, input=name)
        await ctx.create_timer(dt.timedelta(milliseconds=200))
        extra = await ctx.wait_for_external_event("go")
        return f"{loud} {extra}"

    return wfr


async def _run_flow(client: WorkflowClient, instance_id: str) -> str:
    """Start ``flow``, send it its event, wait; its output."""
    iid = await client.schedule_new_workflow("flow", input="ada", instance_id=instance_id)
    await client.wait_for_workflow_start(iid, timeout=15)
    await client.raise_workflow_event(iid, "go", data="ok")
    state = await client.wait_for_workflow_completion(iid, timeout=15)
    assert WorkflowStatus.COMPLETED is state.runtime_status, state.failure_details
    return state.serialized_output


@pytest.fixture
def roles_server(tmp_path: Path):
    """A server whose users are ``worker``, ``starter`` and ``viewer`` (ROLES_CONFIG)."""
    with EmbeddedNatsServer(store_dir=tmp_path / "store", config=ROLES_CONFIG) as server:
        yield server


class TestUserPermissions:
    """Users with allow lists: the worker's list is enough, the others are confined."""

    async def test_worker_user_runs_workflows_without_any_violation(self, roles_server):
        """A runtime and a client logged in as ``worker`` start, signal, re-run and purge a
        workflow, and the server reports no permission violation (acks included)."""
        errors = ErrorLog()
        options = {**creds("worker"), "error_cb": errors.record}
        async with build_runtime(roles_server.url, **options):
            client = await WorkflowClient.connect(roles_server.url, prefix=PREFIX, **options)
            try:
                first = await _run_flow(client, "w-1")
                again = await _run_flow(client, "w-1")  # a finished id runs afresh (purge)
                listed = [s.instance_id async for s in client.list_workflows()]
                history = await client.get_history("w-1")
                purged = await client.purge_workflow("w-1")
                gone = await client.get_workflow_state("w-1")
            finally:
                await client.close()
        assert '"ADA ok"' == first == again
        assert ["w-1"] == listed
        assert isinstance(history[-1], ExecutionCompleted)
        assert 1 == purged
        assert gone is None
        assert [] == errors.violations()

    async def test_worker_user_moves_large_payloads_without_any_violation(self, roles_server):
        """Payloads over the threshold go through the Object Store with the worker's list:
        stored by client and activity, read by worker and client, deleted by purge."""
        errors = ErrorLog()
        options = {**creds("worker"), "error_cb": errors.record}
        name = "x" * 5000
        async with build_runtime(roles_server.url, threshold=1024, **options):
            client = await WorkflowClient.connect(
                roles_server.url, prefix=PREFIX, large_payload_threshold=1024, **options
            )
            try:
                iid = await client.schedule_new_workflow("greet", input=name)
                state = await client.wait_for_workflow_completion(iid, timeout=15)
                purged = await client.purge_workflow(iid)
            finally:
                await client.close()
        assert f'"hello {name.upper()}"' == state.serialized_output
        assert 1 == purged
        assert [] == errors.violations()

    async def test_starter_starts_through_the_public_subject(self, roles_server):
        """``starter`` (publish ``<p>.start.>``, subscribe ``_INBOX.>``) gets a PubAck for a
        start event and the workflow completes; its publish to a history subject is refused."""
        async with build_runtime(roles_server.url, **creds("worker")):
            client = await WorkflowClient.connect(roles_server.url, prefix=PREFIX,
                                                  **creds("worker"))
            errors = ErrorLog()
            starter = await nats.connect(
                roles_server.url, error_cb=errors.record, **creds("starter")
            )
            try:
                body = json.dumps({"instance_id": "st-1", "input": "bob"}).encode()
                ack = await starter.jetstream().publish(f"{PREFIX}.start.greet", body, timeout=5)
                state = await client.wait_for_workflow_completion("st-1", timeout=15)
                await starter.publish(f"{PREFIX}.history.st-2", b"{}")
                refused = await errors.wait_for(f'"{PREFIX}.history.st-2"')
            finally:
                await starter.close()
                await client.close()
        assert f"{PREFIX.upper()}_WORK" == ack.stream
        assert '"hello BOB"' == state.serialized_output
        assert "permissions violation for publish" in refused

    async def test_viewer_cannot_start_and_the_worker_keeps_serving(self, roles_server):
        """``viewer`` (read-only API, no ``<p>.start.>``) has its start publish refused, no
        instance appears, it can still read state and history, and the worker goes on."""
        async with build_runtime(roles_server.url, **creds("worker")):
            worker = await WorkflowClient.connect(roles_server.url, prefix=PREFIX,
                                                  **creds("worker"))
            errors = ErrorLog()
            raw = await nats.connect(roles_server.url, error_cb=errors.record, **creds("viewer"))
            viewer = await WorkflowClient.connect(
                roles_server.url, prefix=PREFIX, create_streams=False, **creds("viewer")
            )
            try:
                body = json.dumps({"instance_id": "v-1", "input": "eve"}).encode()
                with pytest.raises(nats.errors.TimeoutError):
                    await raw.jetstream().publish(f"{PREFIX}.start.greet", body, timeout=2)
                refused = await errors.wait_for(f'"{PREFIX}.start.greet"')
                probe = await worker.schedule_new_workflow("greet", input="zed",
                                                           instance_id="v-2")
                done = await worker.wait_for_workflow_completion(probe, timeout=15)
                listed = [s.instance_id async for s in worker.list_workflows()]
                missing = await worker.get_workflow_state("v-1")
                seen = await viewer.wait_for_workflow_completion("v-2", timeout=5)
                viewer_list = [s.instance_id async for s in viewer.list_workflows()]
                history = await viewer.get_history("v-2")
                read = await viewer.get_workflow_state("v-2")
            finally:
                await viewer.close()
                await raw.close()
                await worker.close()
        assert "permissions violation for publish" in refused
        assert '"hello ZED"' == done.serialized_output
        assert ["v-2"] == listed == viewer_list
        assert missing is None
        assert WorkflowStatus.COMPLETED is seen.runtime_status
        assert '"hello ZED"' == read.serialized_output
        assert isinstance(history[-1], ExecutionCompleted)


# ------------------------------------------------------------------ token


class TestToken:
    """``authorization { token: ... }``: the token as an option or in the URL."""

    async def test_token_option_and_token_url_complete_a_workflow(self, tmp_path):
        """A runtime with ``token=`` and a client with ``nats://TOKEN@host:port`` complete a
        workflow."""
        config = 'authorization { token: "s3cret" }'
        with EmbeddedNatsServer(store_dir=tmp_path / "store", config=config) as server:
            token_url = server.url.replace("nats://", "nats://s3cret@")
            async with build_runtime(server.url, token="s3cret"):
                client = await WorkflowClient.connect(token_url, prefix=PREFIX)
                try:
                    output = await _run_flow(client, "t-1")
                finally:
                    await client.close()
        assert '"ADA ok"' == output

    async def test_missing_or_wrong_token_is_an_authorization_error(self, tmp_path):
        """Without the token, or with a wrong one, a client that does not reconnect gets
        'Authorization Violation' at once."""
        config = 'authorization { token: "s3cret" }'
        with EmbeddedNatsServer(store_dir=tmp_path / "store", config=config) as server:
            for options in ({}, {"token": "wrong"}):
                with pytest.raises(nats.errors.Error) as caught:
                    async with asyncio.timeout(10):
                        await WorkflowClient.connect(
                            server.url, prefix=PREFIX, allow_reconnect=False, **options
                        )
                assert "authorization violation" in str(caught.value).lower()

    @pytest.mark.slow
    async def test_default_connect_reports_bad_credentials(self, tmp_path):
        """With default options, a client without the token raises an authorization error
        within 5 s instead of retrying forever."""
        config = 'authorization { token: "s3cret" }'
        with (
            EmbeddedNatsServer(store_dir=tmp_path / "store", config=config) as server,
            pytest.raises(nats.errors.Error, match="refused the credentials"),
        ):
            async with asyncio.timeout(5):
                await WorkflowClient.connect(server.url, prefix=PREFIX)

    async def test_cli_takes_the_token_in_the_url(self, tmp_path):
        """``jetloom list`` works with the token in ``--nats-url``; without it the CLI exits 1
        saying the credentials were refused, and the token is not printed."""
        config = 'authorization { token: "s3cret" }'
        with EmbeddedNatsServer(store_dir=tmp_path / "store", config=config) as server:
            token_url = server.url.replace("nats://", "nats://s3cret@")
            results = [
                await run_cli("list", "--nats-url", url, "--prefix", PREFIX)
                for url in (token_url, server.url)
            ]
        (ok_code, ok_out, _), (bad_code, _, bad_err) = results
        assert 0 == ok_code
        assert "no instances" in ok_out
        assert 1 == bad_code
        assert "refused the credentials" in bad_err
        assert "s3cret" not in bad_err


# ------------------------------------------------------------------ TLS


def _write_pki(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    paths: dict[str, Path] = {}

    def save(name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        paths[name] = folder / f"{name}.pem"
        paths[name].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        paths[name + "-key"] = folder / f"{name}-key.pem"
        paths[name + "-key"].write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    def issue(cn: str, key, issuer, issuer_key, *, ca: bool, usage=None, san=None):
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if usage:
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "jetloom test CA")])
    save("ca", issue("jetloom test CA", ca_key, ca_name, ca_key, ca=True), ca_key)
    server_key = ec.generate_private_key(ec.SECP256R1())
    san = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    server_cert = issue("127.0.0.1", server_key, ca_name, ca_key, ca=False,
                        usage=ExtendedKeyUsageOID.SERVER_AUTH, san=san)
    save("server", server_cert, server_key)
    client_key = ec.generate_private_key(ec.SECP256R1())
    client_cert = issue("worker", client_key, ca_name, ca_key, ca=False,
                        usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    save("client", client_cert, client_key)
    return paths


def _tls_context(pki: dict[str, Path], *, client_cert: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki["ca"]))
    if client_cert:
        context.load_cert_chain(str(pki["client"]), str(pki["client-key"]))
    return context


def _tls_config(pki: dict[str, Path]) -> str:
    """Server configuration: TLS with the test CA, client certificates required."""
    return (
        "tls {\n"
        f"  cert_file: {json.dumps(str(pki['server']))}\n"
        f"  key_file: {json.dumps(str(pki['server-key']))}\n"
        f"  ca_file: {json.dumps(str(pki['ca']))}\n"
        "  verify: true\n"
        "  timeout: 2\n"
        "}"
    )


@pytest.fixture
def tls_server(tmp_path: Path):
    """A server that requires TLS with a client certificate signed by a test CA."""
    pki = _write_pki(tmp_path)
    config = _tls_config(pki)
    with EmbeddedNatsServer(store_dir=tmp_path / "store", config=config, scheme="tls") as server:
        yield server, pki


class TestTls:
    """Mutual TLS: a CA, a server certificate and a client certificate."""

    async def test_runtime_and_client_complete_a_workflow_over_tls(self, tls_server):
        """A runtime and a client with ``tls=`` an SSLContext (CA + client certificate)
        complete a workflow."""
        server, pki = tls_server
        context = _tls_context(pki, client_cert=True)
        async with build_runtime(server.url, tls=context):
            client = await WorkflowClient.connect(server.url, prefix=PREFIX, tls=context)
            try:
                output = await _run_flow(client, "tls-1")
            finally:
                await client.close()
        assert '"ADA ok"' == output

    async def test_unknown_server_certificate_fails_fast(self, tls_server):
        """A client reconnecting forever by default, whose CAs do not vouch for the server's
        certificate, raises NatsTlsError at once instead of retrying."""
        server, _ = tls_server
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)  # the system's CAs
        with pytest.raises(NatsTlsError) as caught:
            async with asyncio.timeout(10):
                await WorkflowClient.connect(server.url, prefix=PREFIX, tls=context)
        assert "certificate verify failed" in str(caught.value)
        assert isinstance(caught.value.ssl_error, ssl.SSLCertVerificationError)

    async def test_client_without_certificate_is_refused(self, tls_server):
        """Without a client certificate (verify: true) the connection fails at once."""
        server, pki = tls_server
        with pytest.raises((nats.errors.Error, OSError, ssl.SSLError)):
            async with asyncio.timeout(10):
                nc = await nats.connect(
                    server.url, tls=_tls_context(pki, client_cert=False), allow_reconnect=False
                )
                await nc.flush(timeout=2)


# ------------------------------------------------------------------ every way to log in


def _given(auth: NatsAuth) -> dict[str, str]:
    return {name: str(value) for name in ENVIRONMENT if (value := getattr(auth, name))}


def as_env(auth: NatsAuth) -> dict[str, str]:
    """The NATS_* environment variables saying what ``auth`` says."""
    return {ENVIRONMENT[name]: value for name, value in _given(auth).items()}


def as_options(auth: NatsAuth) -> list[str]:
    """The ``jetloom`` options saying what ``auth`` says."""
    return [part for name, value in _given(auth).items() for part in (OPTIONS[name], value)]


def _seed_in(path: Path) -> str:
    """The nkey seed (``SU...``) in a seed or creds file."""
    return next(line for line in path.read_text().splitlines() if line.startswith("SU"))


@dataclass(frozen=True)
class Login:
    """A running server that wants one kind of credentials, those credentials and wrong ones."""

    url: str
    auth: NatsAuth
    """The right credentials (and TLS files)."""
    wrong: NatsAuth
    """Credentials the server refuses."""
    refused: str
    """What the CLI's error says about ``wrong``."""
    unauthenticated: str
    """What the CLI's error says when given nothing."""
    secrets: tuple[str, ...]
    """Text that must never be printed."""


LOGIN_KINDS = ["user", "token", "nkey", "creds", "tls"]


@pytest.fixture(params=LOGIN_KINDS)
def login(request: pytest.FixtureRequest, tmp_path: Path):
    """A server with user/password, token, nkey, decentralized (creds) or mutual-TLS auth."""
    kind = request.param
    scheme = "nats"
    refused = unauthenticated = "refused the credentials (no credentials"
    if kind == "user":
        config = 'authorization { users = [{user: "worker", password: "w0rker-pw"}] }'
        auth = NatsAuth(user="worker", password="w0rker-pw")
        wrong = NatsAuth(user="worker", password="hunter2-wrong")
        refused = "refused the credentials (user 'worker' with a password"
        secrets = ("w0rker-pw", "hunter2-wrong")
    elif kind == "token":
        config = 'authorization { token: "t0ken-s3cret" }'
        auth, wrong = NatsAuth(token="t0ken-s3cret"), NatsAuth(token="wr0ng-t0ken")
        refused = "refused the credentials (a token"
        secrets = ("t0ken-s3cret", "wr0ng-t0ken")
    elif kind == "nkey":
        user, stranger = nkey_user(tmp_path), nkey_user(tmp_path, "stranger")
        config = f"authorization {{ users = [{{nkey: {user.public_key}}}] }}"
        auth, wrong = NatsAuth(nkey=user.seed_file), NatsAuth(nkey=stranger.seed_file)
        refused = f"refused the credentials (nkey seed file '{stranger.seed_file}'"
        secrets = (_seed_in(user.seed_file), _seed_in(stranger.seed_file))
    elif kind == "creds":
        setup = operator_setup(tmp_path)
        config = setup.config
        auth, wrong = NatsAuth(creds=setup.creds), NatsAuth(creds=setup.other_creds)
        refused = f"refused the credentials (creds file '{setup.other_creds}'"
        secrets = (_seed_in(setup.creds), _seed_in(setup.other_creds))
    else:
        pki = _write_pki(tmp_path)
        config, scheme = _tls_config(pki), "tls"
        auth = NatsAuth(tls_ca=pki["ca"], tls_cert=pki["client"], tls_key=pki["client-key"])
        wrong = NatsAuth(tls_ca=pki["ca"])  # no client certificate
        # Depending on when the server's alert arrives, the client sees a TLS error
        # (certificate required) or a closed connection; either error says to give one.
        refused = "--tlscert"
        unauthenticated = "certificate verify failed"  # the system's CAs do not know ours
        secrets = (pki["client-key"].read_text().splitlines()[1],)
    store = tmp_path / "store"
    with EmbeddedNatsServer(store_dir=store, config=config, scheme=scheme) as server:
        yield Login(server.url, auth, wrong, refused, unauthenticated, secrets)


class TestEveryLogin:
    """User/password, token, nkey seed file, creds file and mutual TLS, each given as
    ``NatsAuth``, as NATS_* environment variables and as ``jetloom`` options."""

    async def test_runtime_and_client_with_nats_auth(self, login: Login):
        """A runtime and a client given ``NatsAuth(...).connect_options()`` complete a
        workflow."""
        options = login.auth.connect_options()
        async with build_runtime(login.url, **options):
            client = await WorkflowClient.connect(login.url, prefix=PREFIX, **options)
            try:
                output = await _run_flow(client, "auth-1")
            finally:
                await client.close()
        assert '"ADA ok"' == output

    async def test_runtime_and_client_from_the_environment(
        self, login: Login, monkeypatch: pytest.MonkeyPatch
    ):
        """With NATS_USER/NATS_PASSWORD, NATS_TOKEN, NATS_NKEY, NATS_CREDS or
        NATS_CA/NATS_CERT/NATS_KEY set, a runtime and a client given no options complete a
        workflow."""
        for variable, value in as_env(login.auth).items():
            monkeypatch.setenv(variable, value)
        async with build_runtime(login.url):
            client = await WorkflowClient.connect(login.url, prefix=PREFIX)
            try:
                output = await _run_flow(client, "env-1")
            finally:
                await client.close()
        assert '"ADA ok"' == output

    async def test_cli_options_and_environment(self, login: Login):
        """``jetloom list`` logs in with the credentials as options (--user/--password,
        --token, --nkey, --creds, --tlsca/--tlscert/--tlskey) and as NATS_* variables, and
        prints no secret."""
        where = ("--nats-url", login.url, "--prefix", PREFIX)
        results = await asyncio.gather(
            run_cli("list", *where, *as_options(login.auth)),
            run_cli("list", *where, env=as_env(login.auth)),
        )
        assert [(0, "no instances\n", "")] * 2 == results
        assert [] == [s for s in login.secrets if s in repr(results)]

    async def test_cli_wrong_or_no_credentials_are_one_error_line(self, login: Login):
        """Wrong credentials, and none at all, exit 1 with one ``error:`` line that says what
        was refused, within seconds; no secret is printed."""
        where = ("--nats-url", login.url, "--prefix", PREFIX)
        async with asyncio.timeout(20):
            wrong, nothing = await asyncio.gather(
                run_cli("list", *where, *as_options(login.wrong)), run_cli("list", *where)
            )
        assert (1, "", 1, "") == (wrong[0], wrong[1], nothing[0], nothing[1])
        assert [1, 1] == [len(wrong[2].splitlines()), len(nothing[2].splitlines())]
        assert login.refused in wrong[2]
        assert login.unauthenticated in nothing[2]
        assert [] == [s for s in login.secrets if s in wrong[2] + nothing[2]]


class TestNkeyAndCreds:
    """Refusals of unknown nkeys and accounts, and options that beat the environment."""

    async def test_unknown_nkey_is_refused_at_once(self, tmp_path: Path):
        """A client (reconnecting forever by default) with an nkey the server does not know
        raises NatsAuthorizationError naming the seed file, not the seed."""
        user, stranger = nkey_user(tmp_path), nkey_user(tmp_path, "stranger")
        config = f"authorization {{ users = [{{nkey: {user.public_key}}}] }}"
        with (
            EmbeddedNatsServer(store_dir=tmp_path / "store", config=config) as server,
            pytest.raises(NatsAuthorizationError) as caught,
        ):
            async with asyncio.timeout(10):
                await WorkflowClient.connect(
                    server.url, prefix=PREFIX, nkeys_seed=str(stranger.seed_file)
                )
        assert f"nkey seed file '{stranger.seed_file}'" in str(caught.value)
        assert _seed_in(stranger.seed_file) not in str(caught.value)

    async def test_options_beat_the_environment(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ):
        """With NATS_CREDS naming a user of an unknown account, a client given its own creds
        file connects, and one given nothing is refused naming the variable's file."""
        setup = operator_setup(tmp_path)
        monkeypatch.setenv("NATS_CREDS", str(setup.other_creds))
        with EmbeddedNatsServer(store_dir=tmp_path / "store", config=setup.config) as server:
            own = NatsAuth(creds=setup.creds).connect_options()
            client = await WorkflowClient.connect(server.url, prefix=PREFIX, **own)
            try:
                listed = [s async for s in client.list_workflows()]
            finally:
                await client.close()
            with pytest.raises(NatsAuthorizationError, match=r"stranger\.creds"):
                async with asyncio.timeout(10):
                    await WorkflowClient.connect(server.url, prefix=PREFIX)
        assert [] == listed


class TestCliServices:
    """The long-running commands pass their credentials on: ``dev`` to the runtimes it hosts,
    ``serve-http`` to its client."""

    async def test_dev_with_creds_and_start_with_nats_creds(self, tmp_path: Path):
        """``jetloom dev --creds`` hosts tests/cli_workflows.py (whose runtime has no
        credentials of its own) on a server with decentralized auth; ``jetloom start --wait``
        with NATS_CREDS runs a workflow there."""
        setup = operator_setup(tmp_path)
        with EmbeddedNatsServer(store_dir=tmp_path / "store", config=setup.config) as server:
            where = ("--nats-url", server.url, "--prefix", PREFIX)
            with (tmp_path / "dev.err").open("wb") as errors:
                dev = LineProcess("jetloom dev", await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "engine.cli", "dev", "tests/cli_workflows.py", *where,
                    "--creds", str(setup.creds),
                    stdout=asyncio.subprocess.PIPE, stderr=errors, env=cli_env(), cwd=str(ROOT),
                ))
                try:
                    await dev.wait_for_line(lambda line: "ready" in line, timeout=30)
                    started = await run_cli(
                        "start", "doubler", "--input", "4", "--wait", *where,
                        env={"NATS_CREDS": str(setup.creds)},
                    )
                finally:
                    await dev.stop()
        assert (0, ["status: COMPLETED", "output: 8"]) == (
            started[0], started[1].splitlines()[1:]
        ), started
        assert 0 == dev.proc.returncode

    async def test_serve_http_with_an_nkey(self, tmp_path: Path):
        """``jetloom serve-http --nkey`` serves on a server with nkey auth: a workflow
        started over HTTP completes."""
        user = nkey_user(tmp_path)
        config = f"authorization {{ users = [{{nkey: {user.public_key}}}] }}"
        options = NatsAuth(nkey=user.seed_file).connect_options()
        port = free_port()
        with EmbeddedNatsServer(store_dir=tmp_path / "store", config=config) as server:
            async with build_runtime(server.url, **options):
                http = LineProcess("jetloom serve-http", await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "engine.cli", "serve-http", "--port", str(port),
                    "--nats-url", server.url, "--prefix", PREFIX, "--nkey", str(user.seed_file),
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
                    env=cli_env(), cwd=str(ROOT),
                ))
                client = await WorkflowClient.connect(server.url, prefix=PREFIX, **options)
                try:
                    await http.wait_for_line(lambda line: "listening" in line, timeout=30)
                    async with ClientSession() as session:
                        reply = await session.post(
                            f"http://127.0.0.1:{port}/v1.0/workflows/dapr/greet/start"
                            "?instanceID=http-1",
                            data=b'"ann"',
                        )
                    state = await client.wait_for_workflow_completion("http-1", timeout=15)
                finally:
                    await client.close()
                    await http.stop()
        assert (202, '"hello ANN"') == (reply.status, state.serialized_output)


class TestCliCredentialMistakes:
    """Credentials that cannot be used are one clear error line before any connection."""

    @pytest.mark.parametrize(
        ("options", "env", "fragment"),
        [
            (["--token", "t0k"], {"NATS_CREDS": __file__},
             "more than one way to authenticate: token (--token, NATS_TOKEN) and creds "
             "(--creds, NATS_CREDS)"),
            (["--user", "t0k"], {}, "for a token use token (--token, NATS_TOKEN)"),
            (["--creds", "/no/such.creds"], {},
             "creds (--creds, NATS_CREDS) '/no/such.creds' is not a file"),
            (["--tlskey", __file__], {}, "tls_key (--tlskey, NATS_KEY) is set without tls_cert"),
            ([], {"NATS_CA": __file__}, "holds no usable CA certificate"),
        ],
        ids=["two-ways", "user-without-password", "missing-file", "key-without-cert", "bad-ca"],
    )
    async def test_mistake(self, options: list[str], env: dict[str, str], fragment: str):
        """The error names the option and its variable, never the secret."""
        code, out, err = await run_cli("list", "--nats-url", "nats://127.0.0.1:9", *options,
                                       env=env)
        assert (1, "", 1) == (code, out, len(err.splitlines())), err
        assert fragment in err
        assert "t0k" not in err
