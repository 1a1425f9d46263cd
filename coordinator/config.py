"""The coordinator's settings: a TOML file, overridden by ``TWOPC_*`` environment variables.

``TWOPC_SERVER__PORT=7070`` sets ``[server] port``; lists such as the participants can
be given as JSON (``TWOPC_PARTICIPANTS='[{"name": ...}]'``).

TLS (DESIGN.md, "Security"): ``[server]`` serves HTTPS with ``tls_cert_file`` and
``tls_key_file``; each participant with an ``https://`` URL, and ``[cluster]`` for
forwarding to other replicas, trust ``ca_file`` (the system's CAs without it) and may
present a client certificate (``cert_file``, ``key_file``). Every file is loaded when the
settings are, so a missing or broken one fails the configuration, named.
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from twopc_core.protocol import NAME_PATTERN
from twopc_core.serving import ServerLimits
from twopc_core.tls import client_context, server_context

__all__ = [
    "ROLES",
    "AuthSettings",
    "ClusterSettings",
    "LogSettings",
    "ParticipantSettings",
    "ServerSettings",
    "Settings",
    "MetricsSettings",
    "TokenSettings",
    "TransactionSettings",
    "load",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(7070, ge=0, le=65535)
    #: Largest request body the REST API accepts (413 beyond).
    max_body_bytes: int = Field(1 << 20, gt=0)
    #: Serve HTTPS with this certificate (PEM, with its chain) and its key: both or neither.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    #: With TLS, require every client to present a certificate this CA signed (mutual TLS).
    tls_client_ca_file: Path | None = None
    #: A connection must send a complete request head within this long (408 and closed beyond).
    header_timeout_seconds: float = Field(10.0, gt=0)
    #: A request's body must arrive within this long of its head (408 and closed beyond).
    body_timeout_seconds: float = Field(30.0, gt=0)
    #: Most connections open at once; beyond it a new one is answered 503 and closed.
    max_connections: int = Field(1024, gt=0)

    @model_validator(mode="after")
    def _tls_files_load(self) -> ServerSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together: give both or neither")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file needs TLS: give tls_cert_file and tls_key_file too")
        self.ssl_context()  # a file that is missing or does not load fails here, named
        return self

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None

    def ssl_context(self) -> ssl.SSLContext | None:
        """The context to serve HTTPS with; None for plain HTTP."""
        if self.tls_cert_file is None or self.tls_key_file is None:
            return None
        return server_context(self.tls_cert_file, self.tls_key_file, self.tls_client_ca_file)

    def limits(self) -> ServerLimits:
        return ServerLimits(self.header_timeout_seconds, self.body_timeout_seconds, self.max_connections)


class _ClientTls(_Section):
    """How this coordinator reaches an ``https://`` server: whom it trusts, what it shows."""

    #: Trust only this CA (PEM) for the server's certificate; the system's CAs without it.
    ca_file: Path | None = None
    #: A client certificate (PEM) to present, for a server that requires one, and its key
    #: (which may be left out when the certificate file holds it too).
    cert_file: Path | None = None
    key_file: Path | None = None

    @model_validator(mode="after")
    def _tls_files_load(self) -> _ClientTls:
        self.client_ssl()  # a file that is missing or does not load fails here, named
        return self

    @property
    def _has_tls_files(self) -> bool:
        return any(f is not None for f in (self.ca_file, self.cert_file, self.key_file))

    def client_ssl(self) -> ssl.SSLContext | None:
        """The context for ``https://`` URLs; None for the default (the system's CAs, no
        client certificate)."""
        if not self._has_tls_files:
            return None
        return client_context(self.ca_file, self.cert_file, self.key_file)


class LogSettings(_Section):
    #: ``sqlite``: a file of this replica's own (the embedded default); ``postgres``: a
    #: database shared by every replica (``dsn``).
    store: Literal["sqlite", "postgres"] = "sqlite"
    #: The SQLite file.
    path: Path = Path("var/coordinator.db")
    #: The PostgreSQL database, e.g. postgresql://twopc@127.0.0.1:5432/twopc
    dsn: str | None = None
    #: Most connections this replica keeps to the PostgreSQL log.
    pool_size: int = Field(8, gt=1)
    #: How long a finished transaction stays visible before it is pruned.
    retention_seconds: float = Field(24 * 3600.0, ge=0)
    prune_interval_seconds: float = Field(60.0, gt=0)
    #: BROKEN ON PURPOSE: decision writes skip the lease condition (the fence checks
    #: neither the epoch nor the lease). Exists only so that chaos runs can prove their
    #: checkers catch a replica that decides after it was taken over.
    unsafe_unfenced_decisions: bool = False

    @model_validator(mode="after")
    def _postgres_needs_a_dsn(self) -> LogSettings:
        if self.store == "postgres" and not self.dsn:
            raise ValueError("store = 'postgres' needs a dsn")
        return self


class ClusterSettings(_ClientTls):
    """How this replica takes part beside others over a shared (PostgreSQL) log.

    ``ca_file``, ``cert_file``, ``key_file``: the TLS of requests forwarded to another
    replica's ``https://`` advertise URL.
    """

    #: How the other replicas reach this one; by default its own host and port (https
    #: when the server has TLS).
    advertise_url: str | None = None
    #: A replica that has not renewed its lease for this long is taken over by another.
    lease_ms: int = Field(3000, ge=300)

    @field_validator("advertise_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+/?$", value):
            raise ValueError("must be an http(s) URL with no path")
        return value.rstrip("/") if value else value


class TransactionSettings(_Section):
    default_timeout_ms: int = Field(30_000, gt=0)
    max_timeout_ms: int = Field(600_000, gt=0)
    #: A prepare that takes longer counts as a ``no`` vote.
    prepare_timeout_ms: int = Field(10_000, gt=0)
    #: How long a commit call waits for phase 2 before answering with branches pending.
    commit_wait_ms: int = Field(10_000, ge=0)
    #: Phase-2 retries: exponential backoff from base to cap, with full jitter.
    retry_base_ms: int = Field(50, gt=0)
    retry_cap_ms: int = Field(5_000, gt=0)
    #: Per-call timeout of a phase-2 message.
    phase_two_timeout_ms: int = Field(5_000, gt=0)
    reaper_interval_ms: int = Field(500, gt=0)
    #: How long an Idempotency-Key is remembered in memory after its transaction ends.
    idempotency_ttl_seconds: float = Field(3600.0, ge=0)
    #: BROKEN ON PURPOSE: send phase 2 before the COMMIT decision is durable. Exists only
    #: so that chaos runs can prove their checkers catch a coordinator that does this.
    unsafe_lazy_decision: bool = False


#: What a token may be allowed: ``client`` begins and drives its own transactions,
#: ``reader`` reads everything, ``operator`` also settles what the protocol cannot.
ROLES = ("client", "reader", "operator")
Role = Literal["client", "reader", "operator"]


class MetricsSettings(_Section):
    #: Observe the latency and size histograms on the hot path. Off, ``/metrics`` keeps
    #: the counts and gauges (they cost nothing between scrapes) and drops the histograms.
    enabled: bool = True


class TokenSettings(_Section):
    """A bearer token the REST API accepts; the configuration keeps only its hash."""

    #: Who holds it: recorded with every transaction it begins and every act it makes.
    name: str = Field(pattern=NAME_PATTERN)
    #: The token's SHA-256, hex (``twopc token new`` prints both).
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    roles: list[Role] = Field(min_length=1)


class AuthSettings(_Section):
    #: Off only for a coordinator that nothing but its own machine can reach: then every
    #: caller may do everything (the server warns at start).
    enabled: bool = True
    tokens: list[TokenSettings] = []
    #: ``/metrics`` without a token (for a scraper on a trusted network); else it needs
    #: the ``reader`` role.
    public_metrics: bool = False

    @field_validator("tokens")
    @classmethod
    def _unique(cls, value: list[TokenSettings]) -> list[TokenSettings]:
        for what, keys in (("names", [t.name for t in value]), ("hashes", [t.sha256 for t in value])):
            duplicates = sorted({k for k in keys if keys.count(k) > 1})
            if duplicates:
                raise ValueError(f"token {what} must be unique: {', '.join(duplicates)}")
        return value


class ParticipantSettings(_ClientTls):
    """A registered participant; ``ca_file``, ``cert_file``, ``key_file``: the TLS of an
    ``https://`` URL."""

    name: str = Field(pattern=NAME_PATTERN)
    #: Where the participant protocol is mounted, e.g. https://127.0.0.1:7101/twopc
    url: str
    secret: str = Field(min_length=1)
    #: Most connections kept open to this participant.
    max_connections: int = Field(64, gt=0)
    #: Most exchanges in flight to it at once; calls queued meanwhile go as one batch.
    max_inflight_exchanges: int = Field(4, gt=0)
    #: Exchange frames over one WebSocket when the participant offers it (the SDK does),
    #: which costs both sides far less than HTTP; plain HTTP otherwise, or when false.
    channel: bool = True

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+(/\S*)?$", value):
            raise ValueError("must be an http(s) URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _tls_files_need_https(self) -> ParticipantSettings:
        if self._has_tls_files and not self.url.startswith("https://"):
            raise ValueError(f"participant {self.name}: ca_file, cert_file and key_file need an https:// url")
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TWOPC_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    #: This coordinator's id; it is part of every gtid, so replicas need distinct ids.
    node_id: str = Field("c1", pattern=r"^[A-Za-z0-9]{1,16}$")
    server: ServerSettings = ServerSettings()
    log: LogSettings = LogSettings()
    cluster: ClusterSettings = ClusterSettings()
    transactions: TransactionSettings = TransactionSettings()
    auth: AuthSettings = AuthSettings()
    metrics: MetricsSettings = MetricsSettings()
    participants: list[ParticipantSettings] = []
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    #: The service log's lines (``[log]`` is the decision log): JSON, readable console
    #: lines, or ``auto``: console on a terminal, ``key=value`` elsewhere.
    log_format: Literal["auto", "json", "console"] = "auto"

    @field_validator("participants")
    @classmethod
    def _unique_names(cls, value: list[ParticipantSettings]) -> list[ParticipantSettings]:
        names = [p.name for p in value]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"participant names must be unique: {', '.join(duplicates)}")
        return value

    @property
    def advertise_url(self) -> str:
        """Where the other replicas reach this one."""
        scheme = "https" if self.server.tls else "http"
        return self.cluster.advertise_url or f"{scheme}://{self.server.host}:{self.server.port}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Explicit arguments win over the environment, which wins over the file.
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))


def load(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Settings from ``config_file`` (TOML) under the environment's ``TWOPC_*`` values.

    Raises FileNotFoundError for a missing file and pydantic's ValidationError for bad values.
    """
    if config_file is not None and not config_file.is_file():
        raise FileNotFoundError(f"config file not found: {config_file}")
    settings_cls: type[Settings] = Settings
    if config_file is not None:
        # The file is a class-level setting in pydantic-settings: bind it to a subclass.
        settings_cls = type(
            "Settings", (Settings,), {"model_config": {**Settings.model_config, "toml_file": config_file}}
        )
    return settings_cls(**overrides)
