"""A participant is built from keywords or from settings (the environment's), and a
value that cannot work is refused before anything starts, named."""

from __future__ import annotations

from pathlib import Path

import pytest

from participant_sdk import Participant, ParticipantConfigError, ParticipantSettings
from participant_sdk.testing import InMemoryResource

GOOD = {"name": "inventory", "secret": "s3cret", "coordinator_url": "http://127.0.0.1:7070", "log_path": "p.db"}


def test_positional_arguments_are_refused() -> None:
    with pytest.raises(TypeError):
        Participant("inventory", InMemoryResource(), "s3cret", "http://127.0.0.1:7070", "p.db")  # type: ignore[misc]


@pytest.mark.parametrize(
    ("wrong", "named"),
    [
        ({"name": "has spaces"}, "name: String should match pattern"),
        ({"secret": "  "}, "secret: must not be empty"),
        ({"coordinator_url": "localhost:7070"}, "coordinator_url: a coordinator URL is http(s)://"),
        ({"coordinator_url": []}, "coordinator_url: no coordinator URL given"),
        ({"inquiry_interval": 0}, "inquiry_interval: Input should be greater than 0"),
        ({"sweep_interval": -1.0}, "sweep_interval: Input should be greater than 0"),
    ],
)
def test_a_wrong_value_is_refused_naming_it(tmp_path: Path, wrong: dict[str, object], named: str) -> None:
    with pytest.raises(ParticipantConfigError, match="invalid participant settings") as refused:
        Participant(resource=InMemoryResource(), **{**GOOD, "log_path": tmp_path / "p.db", **wrong})  # type: ignore[arg-type]

    assert named in str(refused.value)


def test_a_refused_secret_is_not_shown() -> None:
    with pytest.raises(ParticipantConfigError) as refused:
        Participant(resource=InMemoryResource(), **{**GOOD, "secret": 42})  # type: ignore[arg-type]

    assert "42" not in str(refused.value)


def test_a_directory_as_the_log_path_is_refused_with_a_file_name_suggested(tmp_path: Path) -> None:
    with pytest.raises(ParticipantConfigError, match=r"log_path: .* is a directory; name the log file in it"):
        Participant(resource=InMemoryResource(), **{**GOOD, "log_path": tmp_path})  # type: ignore[arg-type]


def test_a_resource_that_is_not_one_is_refused() -> None:
    with pytest.raises(ParticipantConfigError, match=r"resource: must be a participant_sdk\.Resource"):
        Participant(resource=object(), **GOOD)  # type: ignore[arg-type]


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TWOPC_PARTICIPANT_NAME", "inventory")
    monkeypatch.setenv("TWOPC_PARTICIPANT_SECRET", "s3cret")
    monkeypatch.setenv("TWOPC_PARTICIPANT_COORDINATOR_URL", "http://10.0.0.1:7070, http://10.0.0.2:7070/")
    monkeypatch.setenv("TWOPC_PARTICIPANT_LOG_PATH", str(tmp_path / "p.db"))
    monkeypatch.setenv("TWOPC_PARTICIPANT_INQUIRY_INTERVAL", "2.5")

    participant = Participant.from_settings(ParticipantSettings(), resource=InMemoryResource())

    assert participant.name == "inventory"
    assert participant.coordinator_urls == ("http://10.0.0.1:7070", "http://10.0.0.2:7070")
    assert participant.inquiry_interval == 2.5
    assert participant.log.path == tmp_path / "p.db"


def test_settings_missing_from_the_environment_name_their_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for field in ("NAME", "SECRET", "COORDINATOR_URL", "LOG_PATH"):
        monkeypatch.delenv(f"TWOPC_PARTICIPANT_{field}", raising=False)
    monkeypatch.setenv("TWOPC_PARTICIPANT_NAME", "inventory")

    with pytest.raises(ParticipantConfigError) as refused:
        ParticipantSettings()

    message = str(refused.value)
    assert "secret (TWOPC_PARTICIPANT_SECRET): missing" in message
    assert "coordinator_url (TWOPC_PARTICIPANT_COORDINATOR_URL): missing" in message
    assert "log_path (TWOPC_PARTICIPANT_LOG_PATH): missing" in message
    assert "name" not in message.split(":", 1)[1].split(";")[0]  # the name given is not among them


def test_the_settings_do_not_show_the_secret() -> None:
    settings = ParticipantSettings(**GOOD)  # type: ignore[arg-type]

    assert "s3cret" not in repr(settings)
