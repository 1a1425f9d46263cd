"""Settings come from a TOML file, and TWOPC_* environment variables win over it; TLS
files are loaded with them, so a missing or broken one fails the configuration."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from pydantic import ValidationError

from coordinator.config import Settings, load
from tests.conftest import TlsFiles
from twopc_core.serving import ServerLimits

TOML = """
node_id = "n7"
[server]
port = 7171
[log]
path = "data/c.db"
[[participants]]
name = "queue-a"
url = "http://127.0.0.1:7101/twopc/"
secret = "s3cret"
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "twopc.toml"
    path.write_text(TOML)
    return path


def test_the_file_sets_sections_and_participants(config_file: Path) -> None:
    settings = load(config_file)
    assert settings.node_id == "n7"
    assert settings.server.port == 7171
    assert settings.log.path == Path("data/c.db")
    assert [(p.name, p.url) for p in settings.participants] == [("queue-a", "http://127.0.0.1:7101/twopc")]


def test_the_environment_overrides_one_nested_setting(config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWOPC_SERVER__PORT", "9090")
    monkeypatch.setenv("TWOPC_TRANSACTIONS__PREPARE_TIMEOUT_MS", "250")
    settings = load(config_file)
    assert settings.server.port == 9090
    assert settings.server.host == "127.0.0.1"  # the rest of the section stays
    assert settings.transactions.prepare_timeout_ms == 250


def test_participants_can_come_from_the_environment_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWOPC_PARTICIPANTS", '[{"name": "q", "url": "http://h:1/twopc", "secret": "x"}]')
    assert [p.name for p in load().participants] == ["q"]


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.toml"):
        load(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ("[server]\nprot = 1\n", "prot"),
        ('[[participants]]\nname = "queue-a"\nurl = "http://x/twopc"\nsecret = "s"\n', "unique"),
        ('[[participants]]\nname = "b"\nurl = "ftp://x"\nsecret = "s"\n', "http"),
        ('[[auth.tokens]]\nname = "t"\nsha256 = "not-hex"\nroles = ["client"]\n', "sha256"),
        (f'[[auth.tokens]]\nname = "t"\nsha256 = "{"a" * 64}"\nroles = ["admin"]\n', "roles"),
        (f'[[auth.tokens]]\nname = "t"\nsha256 = "{"a" * 64}"\nroles = []\n', "roles"),
        (
            f'[[auth.tokens]]\nname = "t"\nsha256 = "{"a" * 64}"\nroles = ["client"]\n'
            f'[[auth.tokens]]\nname = "t"\nsha256 = "{"b" * 64}"\nroles = ["reader"]\n',
            "token names must be unique",
        ),
    ],
)
def test_bad_settings_are_refused_naming_the_problem(tmp_path: Path, extra: str, problem: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(TOML.replace("[server]\nport = 7171\n", "") + extra)
    with pytest.raises(ValidationError, match=problem):
        load(path)


def test_authentication_is_on_by_default_with_no_token_accepted() -> None:
    settings = Settings()
    assert settings.auth.enabled and settings.auth.tokens == [] and not settings.auth.public_metrics


def test_tokens_can_come_from_the_environment_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWOPC_AUTH__TOKENS", f'[{{"name": "svc", "sha256": "{"c" * 64}", "roles": ["client"]}}]')
    assert [(t.name, t.roles) for t in load().auth.tokens] == [("svc", ["client"])]


# -- TLS and the server's limits ----------------------------------------------------------


def https_participant(**tls: object) -> dict[str, object]:
    return {"name": "p", "url": "https://127.0.0.1:7101/twopc", "secret": "s", **tls}


def test_a_server_with_a_certificate_and_key_serves_https_and_advertises_it(tls_files: TlsFiles) -> None:
    settings = Settings(server={"tls_cert_file": tls_files.server_cert, "tls_key_file": tls_files.server_key})
    assert settings.server.ssl_context() is not None
    assert settings.advertise_url == "https://127.0.0.1:7070"
    assert Settings().server.ssl_context() is None
    assert Settings().advertise_url == "http://127.0.0.1:7070"


def test_a_certificate_without_its_key_is_refused(tls_files: TlsFiles) -> None:
    with pytest.raises(ValidationError, match="both or neither"):
        Settings(server={"tls_cert_file": tls_files.server_cert})


def test_a_server_certificate_that_does_not_exist_is_refused_naming_it(tls_files: TlsFiles, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"server certificate file .*missing\.pem.* does not exist"):
        Settings(server={"tls_cert_file": tmp_path / "missing.pem", "tls_key_file": tls_files.server_key})


def test_a_participant_ca_file_that_does_not_exist_is_refused_at_load_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "twopc.toml"
    path.write_text(
        '[[participants]]\nname = "p"\nurl = "https://127.0.0.1:7101/twopc"\nsecret = "s"\n'
        f'ca_file = "{tmp_path / "no-such-ca.pem"}"\n'
    )
    with pytest.raises(ValidationError, match=r"CA file .*no-such-ca\.pem.* does not exist"):
        load(path)


def test_a_participant_with_a_ca_file_gets_a_context_trusting_it(tls_files: TlsFiles) -> None:
    participant = Settings(participants=[https_participant(ca_file=tls_files.ca)]).participants[0]
    context = participant.client_ssl()
    assert context is not None
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert len(context.get_ca_certs()) == 1  # that CA only, not the system's beside it


def test_tls_files_for_a_plain_http_participant_are_refused(tls_files: TlsFiles) -> None:
    participant = {**https_participant(ca_file=tls_files.ca), "url": "http://127.0.0.1:7101/twopc"}
    with pytest.raises(ValidationError, match="need an https:// url"):
        Settings(participants=[participant])


def test_the_cluster_ca_file_must_exist_too(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="CA file"):
        Settings(cluster={"ca_file": tmp_path / "missing.pem"})


def test_the_server_limits_have_defaults_and_come_from_the_settings() -> None:
    assert Settings().server.limits() == ServerLimits(header_timeout=10.0, body_timeout=30.0, max_connections=1024)
    server = Settings(server={"header_timeout_seconds": 2, "body_timeout_seconds": 3, "max_connections": 4}).server
    assert server.limits() == ServerLimits(header_timeout=2, body_timeout=3, max_connections=4)


def test_the_service_log_format_is_a_top_level_setting_beside_the_decision_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "twopc.toml"
    path.write_text('log_format = "console"\n[log]\nstore = "sqlite"\n')
    assert Settings().log_format == "auto"
    assert load(path).log_format == "console"
    monkeypatch.setenv("TWOPC_LOG_FORMAT", "json")
    assert load(path).log_format == "json"
    monkeypatch.setenv("TWOPC_LOG_FORMAT", "xml")
    with pytest.raises(ValidationError, match="log_format"):
        load(path)
