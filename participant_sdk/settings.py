"""What a participant is configured with, validated in one place.

A service builds a :class:`~participant_sdk.Participant` from keyword arguments, or from
a :class:`ParticipantSettings` it reads from the environment::

    settings = ParticipantSettings()      # TWOPC_PARTICIPANT_NAME, _SECRET, _COORDINATOR_URL, _LOG_PATH, ...
    participant = Participant.from_settings(settings, resource=InventoryResource("var/inventory.db"))

Either way the values are checked before anything starts, and a wrong one is refused
with a :class:`ParticipantConfigError` that names it and says what it must be.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from participant_sdk.client import parse_coordinator_urls
from twopc_core.protocol import NAME_PATTERN

__all__ = [
    "ENV_PREFIX",
    "ParticipantConfigError",
    "ParticipantFields",
    "ParticipantSettings",
    "describe_invalid",
    "validated_settings",
]

#: The prefix of the environment variables :class:`ParticipantSettings` reads.
ENV_PREFIX = "TWOPC_PARTICIPANT_"


class ParticipantConfigError(ValueError):
    """A participant's settings that cannot work; the message names every wrong value."""


class ParticipantFields(BaseModel):
    """A participant's settings as given in code (keywords to :class:`Participant`):
    the same checks as :class:`ParticipantSettings`, nothing read from the environment."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The participant's name, as registered with the coordinator; also its branch name.
    name: str = Field(pattern=NAME_PATTERN)
    #: The secret the coordinator signs its calls with (``[[participants]] secret``).
    secret: SecretStr
    #: The coordinator's base URL, or every replica's.
    coordinator_url: Annotated[tuple[str, ...], NoDecode]
    #: The participant log (SQLite): what it voted and learnt, kept across restarts.
    log_path: Path
    inquiry_interval: float = Field(default=5.0, gt=0)
    inquiry_timeout: float = Field(default=10.0, gt=0)
    retention: float = Field(default=3600.0, ge=0)
    sweep_interval: float = Field(default=60.0, gt=0)
    metrics: bool = True

    @field_validator("coordinator_url", mode="before")
    @classmethod
    def _urls(cls, value: Any) -> tuple[str, ...]:
        return parse_coordinator_urls(value)

    @field_validator("secret")
    @classmethod
    def _secret_not_blank(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("must not be empty: it is what the coordinator signs with")
        return value

    @field_validator("log_path")
    @classmethod
    def _log_in_a_directory(cls, value: Path) -> Path:
        if value.is_dir():
            raise ValueError(f"{value} is a directory; name the log file in it (e.g. {value / 'participant.db'})")
        return value


class ParticipantSettings(ParticipantFields, BaseSettings):
    """A participant's settings; read from ``TWOPC_PARTICIPANT_*`` when not given.

    ``coordinator_url`` takes one URL, several (a list), or one string of
    comma-separated URLs (the form of the environment variable), one per coordinator
    replica. The durations are seconds; see :class:`~participant_sdk.Participant` for
    what each one governs. A wrong or missing value raises :class:`ParticipantConfigError`
    naming it and its variable.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ParticipantConfigError(describe_invalid(exc, env_prefix=ENV_PREFIX)) from None


def validated_settings(values: dict[str, Any]) -> ParticipantFields:
    """``values`` checked as :class:`ParticipantSettings` are, nothing read from the
    environment; raises :class:`ParticipantConfigError` naming every wrong value."""
    try:
        return ParticipantFields.model_validate(values)
    except ValidationError as exc:
        raise ParticipantConfigError(describe_invalid(exc)) from None


def describe_invalid(error: ValidationError, env_prefix: str | None = None) -> str:
    """One clause per wrong value: which (and its environment variable, when the
    settings may come from there), what was given, and what it must be."""
    problems = []
    for problem in error.errors():
        field = ".".join(str(part) for part in problem["loc"]) or "settings"
        where = f"{field} ({env_prefix}{field.upper()})" if env_prefix and problem["loc"] else field
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "missing":
            problems.append(f"{where}: missing")
        else:
            problems.append(f"{where}: {message} (got {_shown(field, problem.get('input'))})")
    return "invalid participant settings: " + "; ".join(problems)


def _shown(field: str, value: Any) -> str:
    if field == "secret":
        return "a secret, not shown"
    return repr(value)
