"""Settings come from a TOML file, and TWOPC_* environment variables win over it."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from coordinator.config import load

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
    ],
)
def test_bad_settings_are_refused_naming_the_problem(tmp_path: Path, extra: str, problem: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(TOML.replace("[server]\nport = 7171\n", "") + extra)
    with pytest.raises(ValidationError, match=problem):
        load(path)
