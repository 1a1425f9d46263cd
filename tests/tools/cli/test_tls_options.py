"""TLS on the command line, the same for every participant service: ``--tls-cert`` and
``--tls-key`` serve HTTPS, ``--coordinator-ca`` (with an optional client certificate)
reaches an https coordinator; a missing or lone file is refused, named. ``twopc serve``
serves the coordinator as its settings say."""

from __future__ import annotations

import ssl
from typing import Any

import pytest
from typer.testing import CliRunner

import adapters.kafka.events
import adapters.kafka.pipeline
import adapters.mockqueue.service
import adapters.postgres.bank
from tests.conftest import TlsFiles
from tools.cli._app import app
from twopc_core import telemetry
from twopc_core.serving import ServerLimits

COORDINATOR = ["--coordinator", "https://127.0.0.1:7070"]
#: Each service's serve command, and the module of its run.
SERVE = {
    "mockqueue": (
        ["mockqueue", "serve", "--name", "q", "--port", "1", "--data", "d", "--secret", "s", *COORDINATOR],
        adapters.mockqueue.service,
    ),
    "bank": (
        ["bank", "serve", "--name", "b", "--port", "1", "--dsn", "postgresql://x/y", "--secret", "s", *COORDINATOR],
        adapters.postgres.bank,
    ),
    "events": (
        ["events", "serve", "--name", "e", "--port", "1", "--bootstrap", "k:9092", "--secret", "s", *COORDINATOR],
        adapters.kafka.events,
    ),
    "pipeline": (
        [
            "pipeline",
            "serve",
            "--port",
            "1",
            "--bootstrap",
            "k:9092",
            "--bank",
            "https://b",
            "--events",
            "e",
            *COORDINATOR,
        ],
        adapters.kafka.pipeline,
    ),
}


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What each service's ``run`` was called with (instead of serving)."""
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(telemetry, "setup", lambda *args, **kwargs: None)
    for _, module in SERVE.values():
        monkeypatch.setattr(module, "run", lambda *args, **kwargs: calls.append(kwargs))
    return calls


@pytest.mark.parametrize("service", sorted(SERVE))
def test_every_service_serves_https_and_reaches_an_https_coordinator(
    service: str, served: list[dict[str, Any]], tls_files: TlsFiles
) -> None:
    argv = [
        *SERVE[service][0],
        *("--tls-cert", str(tls_files.server_cert), "--tls-key", str(tls_files.server_key)),
        *("--coordinator-ca", str(tls_files.ca)),
        *("--coordinator-cert", str(tls_files.client_cert), "--coordinator-key", str(tls_files.client_key)),
    ]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.output
    (call,) = served
    assert isinstance(call["ssl_context"], ssl.SSLContext)
    assert isinstance(call["coordinator_ssl"], ssl.SSLContext)
    assert len(call["coordinator_ssl"].get_ca_certs()) == 1


@pytest.mark.parametrize("service", sorted(SERVE))
def test_without_tls_options_a_service_serves_plain_http(service: str, served: list[dict[str, Any]]) -> None:
    result = CliRunner().invoke(app, SERVE[service][0])
    assert result.exit_code == 0, result.output
    assert served[0]["ssl_context"] is None
    assert served[0]["coordinator_ssl"] is None


def test_a_certificate_without_its_key_is_refused(served: list[dict[str, Any]], tls_files: TlsFiles) -> None:
    result = CliRunner().invoke(app, [*SERVE["mockqueue"][0], "--tls-cert", str(tls_files.server_cert)])
    assert result.exit_code == 2
    assert "--tls-cert and --tls-key go together" in result.output
    assert served == []


def test_a_missing_coordinator_ca_is_refused_naming_it(served: list[dict[str, Any]], tmp_path: Any) -> None:
    missing = tmp_path / "no-ca.pem"
    result = CliRunner().invoke(app, [*SERVE["mockqueue"][0], "--coordinator-ca", str(missing)])
    assert result.exit_code == 2
    assert "no-ca.pem" in result.output
    assert served == []


def test_the_pipeline_trusts_the_bank_ca_it_is_given(served: list[dict[str, Any]], tls_files: TlsFiles) -> None:
    result = CliRunner().invoke(app, [*SERVE["pipeline"][0], "--bank-ca", str(tls_files.ca)])
    assert result.exit_code == 0, result.output
    assert isinstance(served[0]["bank_ssl"], ssl.SSLContext)


def test_the_coordinator_serves_https_with_the_limits_of_its_settings(
    monkeypatch: pytest.MonkeyPatch, tls_files: TlsFiles, tmp_path: Any
) -> None:
    import twopc_core.runtime

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(telemetry, "setup", lambda *args, **kwargs: None)
    monkeypatch.setattr(twopc_core.runtime, "run_service", lambda *args, **kwargs: calls.append(kwargs))
    config = tmp_path / "twopc.toml"
    config.write_text(
        f'[server]\ntls_cert_file = "{tls_files.server_cert}"\ntls_key_file = "{tls_files.server_key}"\n'
        "header_timeout_seconds = 2\nbody_timeout_seconds = 3\nmax_connections = 4\n"
        f'[log]\npath = "{tmp_path / "c.db"}"\n'
    )
    result = CliRunner().invoke(app, ["serve", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "on https://127.0.0.1:7070" in result.output
    (call,) = calls
    assert isinstance(call["ssl_context"], ssl.SSLContext)
    assert call["limits"] == ServerLimits(header_timeout=2, body_timeout=3, max_connections=4)
