"""NatsAuth and the NATS_* environment, without a server."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from brokers import InvalidNatsAuthError, NatsAuth
from brokers._auth import describe_options, env_defaults, url_has_credentials, with_default_auth

URL = "nats://127.0.0.1:4222"


@pytest.fixture
def seed_file(tmp_path: Path) -> Path:
    """A file standing in for an nkey seed or creds file (only its existence matters here)."""
    path = tmp_path / "user.nk"
    path.write_text("SUAEXAMPLE\n")
    return path


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No NATS_* credential variable set."""
    for variable in (
        "NATS_USER", "NATS_PASSWORD", "NATS_TOKEN", "NATS_CREDS", "NATS_NKEY",
        "NATS_CERT", "NATS_KEY", "NATS_CA",
    ):
        monkeypatch.delenv(variable, raising=False)
    return monkeypatch


class TestNatsAuth:
    def test_connect_options_of_each_way(self, seed_file: Path) -> None:
        """Each way to authenticate becomes the nats.connect options that carry it."""
        assert [
            {"user": "u", "password": "p"},
            {"token": "t"},
            {"user_credentials": str(seed_file)},
            {"nkeys_seed": str(seed_file)},
            {},
        ] == [
            NatsAuth(user="u", password="p").connect_options(),
            NatsAuth(token="t").connect_options(),
            NatsAuth(creds=seed_file).connect_options(),
            NatsAuth(nkey=seed_file).connect_options(),
            NatsAuth().connect_options(),
        ]

    def test_tls_ca_makes_a_verifying_context(self) -> None:
        """A CA file gives a ``tls`` context that verifies the server's certificate."""
        ca = ssl.get_default_verify_paths().cafile
        if ca is None:
            pytest.skip("no system CA bundle file on this machine")
        context = NatsAuth(tls_ca=ca).connect_options()["tls"]
        assert (ssl.CERT_REQUIRED, True) == (context.verify_mode, context.check_hostname)

    @pytest.mark.parametrize(
        ("given", "fragment"),
        [
            ({"user": "u"}, "user (--user, NATS_USER) is set without password"),
            ({"password": "p"}, "password (--password, NATS_PASSWORD) is set without user"),
            ({"token": "t", "nkey": "x"}, "more than one way to authenticate: token"),
            ({"user": "u", "password": "p", "creds": "x"}, "user/password (--user/--password"),
            ({"tls_key": "k"}, "tls_key (--tlskey, NATS_KEY) is set without tls_cert"),
        ],
    )
    def test_unusable_combinations_are_refused(self, given: dict[str, str], fragment: str) -> None:
        """Half a user/password pair, two ways at once or a key without its certificate are
        refused with the option and variable named."""
        with pytest.raises(InvalidNatsAuthError) as caught:
            NatsAuth(**given)
        assert fragment in str(caught.value)

    @pytest.mark.parametrize("name", ["creds", "nkey", "tls_ca", "tls_cert"])
    def test_missing_file_is_named(self, name: str) -> None:
        """A file that does not exist is an error naming the option, not a failed connect."""
        with pytest.raises(InvalidNatsAuthError, match="/no/such/file' is not a file"):
            NatsAuth(**{name: "/no/such/file"}).connect_options()

    def test_repr_hides_secrets(self) -> None:
        """Password and token never show in repr."""
        assert ["NatsAuth(user='u', password='***')", "NatsAuth(token='***')"] == [
            repr(NatsAuth(user="u", password="hunter2")),
            repr(NatsAuth(token="s3cret")),
        ]

    def test_from_env(self, seed_file: Path) -> None:
        """from_env reads the nats CLI's variables; empty ones count as unset."""
        env = {"NATS_CREDS": str(seed_file), "NATS_TOKEN": "", "NATS_CA": "/ca.pem"}
        assert NatsAuth(creds=str(seed_file), tls_ca="/ca.pem") == NatsAuth.from_env(env)


class TestDefaults:
    def test_environment_fills_what_options_leave_out(
        self, clean_env: pytest.MonkeyPatch, seed_file: Path
    ) -> None:
        """NATS_CREDS applies to options without credentials, not to options or URLs with
        their own."""
        clean_env.setenv("NATS_CREDS", str(seed_file))
        assert [
            {"user_credentials": str(seed_file), "name": "x"},
            {"token": "t"},
            {},
        ] == [
            env_defaults({"name": "x"}, servers=URL),
            env_defaults({"token": "t"}, servers=URL),
            env_defaults({}, servers="nats://tok@127.0.0.1:4222"),
        ]

    def test_unrelated_bad_variables_are_not_read(self, clean_env: pytest.MonkeyPatch) -> None:
        """A caller with its own credentials and TLS is not troubled by half-set variables."""
        clean_env.setenv("NATS_USER", "only-a-user")
        clean_env.setenv("NATS_KEY", "/no/such/key")
        own = {"token": "t", "tls": ssl.create_default_context()}
        assert own == env_defaults(own, servers=URL)
        with pytest.raises(InvalidNatsAuthError, match="NATS_USER"):
            env_defaults({}, servers=URL)

    def test_defaults_keep_explicit_credentials(self, seed_file: Path) -> None:
        """with_default_auth adds credentials only where none are given."""
        defaults = NatsAuth(nkey=seed_file)
        assert [{"nkeys_seed": str(seed_file)}, {"user": "u", "password": "p"}] == [
            with_default_auth({}, defaults, servers=URL),
            with_default_auth({"user": "u", "password": "p"}, defaults, servers=URL),
        ]

    def test_url_credentials(self) -> None:
        """Any URL of a list with a user, password or token counts as credentials."""
        assert [False, True, True, False] == [
            url_has_credentials("nats://a:4222,nats://b:4222"),
            url_has_credentials("nats://a:4222,nats://u:p@b:4222"),
            url_has_credentials("tok@a:4222"),
            url_has_credentials("a:4222"),
        ]

    def test_describe_options_without_secrets(self) -> None:
        """Error messages say how a connection authenticated, never with what secret."""
        assert [
            "creds file 'app.creds'",
            "nkey seed file 'u.nk'",
            "user 'worker' with a password",
            "a token",
            "the credentials in the URL",
            "no credentials",
        ] == [
            describe_options({"user_credentials": "app.creds"}, servers=URL),
            describe_options({"nkeys_seed": "u.nk"}, servers=URL),
            describe_options({"user": "worker", "password": "hunter2"}, servers=URL),
            describe_options({"token": "s3cret"}, servers=URL),
            describe_options({}, servers="nats://s3cret@127.0.0.1:4222"),
            describe_options({}, servers=URL),
        ]
