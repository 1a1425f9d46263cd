"""Scenarios as data: what runs, what strikes it, what must hold afterwards."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "INVARIANTS",
    "ClusterSpec",
    "Invariant",
    "NemesisSpec",
    "ParticipantSpec",
    "Scenario",
    "WorkloadSpec",
    "list_scenarios",
    "load_scenario",
    "load_toml",
    "scenario_dir",
]

Invariant = Literal[
    "atomicity",
    "exactly_once",
    "durability",
    "no_effect_of_aborted",
    "liveness",
    "conservation",
    "no_prepared_left",
    "one_outcome",
    "one_transaction_per_key",
]
INVARIANTS: tuple[Invariant, ...] = get_args(Invariant)
M = TypeVar("M", bound=BaseModel)


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ParticipantSpec(_Spec):
    kind: Literal["mockqueue", "bank", "events"]
    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,30}$")
    #: mockqueue: answer each prepare and commit this much later, as a participant that
    #: does real work at prepare would (so that faults find transactions mid-prepare).
    delay_ms: int = Field(0, ge=0, le=10_000)

    @model_validator(mode="after")
    def _delay_is_a_mock_queue_fault(self) -> ParticipantSpec:
        if self.delay_ms and self.kind != "mockqueue":
            raise ValueError("delay_ms is a fault of the mock queue only")
        return self


class NemesisSpec(_Spec):
    """One kind of fault, struck again and again during the run."""

    kind: Literal[
        "crash-at-failpoint", "kill", "pause", "pause-at-failpoint", "partition", "partition-log", "restart-service"
    ]
    #: A node name, ``coordinator`` (with several replicas: any one of them),
    #: ``participants`` (any one of them), ``any``, or for restart-service ``postgres`` /
    #: ``kafka``. partition-log cuts a coordinator replica off from the log's database.
    target: str = "any"
    #: crash-at-failpoint, pause-at-failpoint: the failpoint the target crashes or stops
    #: itself at (armed for one hit).
    failpoint: str | None = None
    #: Seconds between strikes (jittered by the seed's random generator).
    every_s: float = Field(5.0, gt=0)
    #: How long a killed node stays down, a paused one paused, a partition cut.
    downtime_s: float = Field(1.0, ge=0)

    @model_validator(mode="after")
    def _failpoint_given(self) -> NemesisSpec:
        if self.kind.endswith("-at-failpoint") and not self.failpoint:
            raise ValueError(f"{self.kind} needs a failpoint")
        return self


class WorkloadSpec(_Spec):
    clients: int = Field(8, gt=0, le=256)
    #: Client-side timeout of one transaction's calls.
    request_timeout_s: float = Field(10.0, gt=0)
    #: How long a client that heard no answer goes on asking again, with the same
    #: Idempotency-Key, at the next replica (with one replica: the same one).
    retry_for_s: float = Field(0.0, ge=0)


class ClusterSpec(_Spec):
    """The coordinators: one on its SQLite file, or replicas over a PostgreSQL log."""

    replicas: int = Field(1, ge=1, le=5)
    log: Literal["sqlite", "postgres"] = "sqlite"
    lease_ms: int = Field(3000, ge=300)

    @model_validator(mode="after")
    def _replicas_share_a_log(self) -> ClusterSpec:
        if self.replicas > 1 and self.log != "postgres":
            raise ValueError("several replicas need the shared log: log = 'postgres'")
        return self

    @property
    def shared(self) -> bool:
        return self.log == "postgres"


class Scenario(_Spec):
    name: str
    description: str
    seed: int = 1
    duration_s: float = Field(20.0, gt=0)
    #: After faults stop, everything must be finished within this many seconds.
    liveness_bound_s: float = Field(60.0, gt=0)
    participants: list[ParticipantSpec] = Field(min_length=1)
    workload: WorkloadSpec = WorkloadSpec()
    cluster: ClusterSpec = ClusterSpec()
    nemesis: list[NemesisSpec] = Field(min_length=1)
    invariants: list[Invariant] = list(INVARIANTS)
    #: Coordinator settings by section, e.g. ``[coordinator.transactions] retry_cap_ms = 200``.
    coordinator: dict[str, dict[str, Any]] = {}
    #: The run must be caught: it proves the checkers catch a build broken by one of the
    #: ``unsafe_*`` coordinator settings (which only such a scenario may switch on).
    broken_build: bool = False

    @property
    def kinds(self) -> set[str]:
        return {p.kind for p in self.participants}

    @property
    def unsafe_settings(self) -> list[str]:
        """The coordinator settings that break it on purpose, as ``section.key``."""
        return [
            f"{section}.{key}"
            for section, values in self.coordinator.items()
            for key, value in values.items()
            if key.startswith("unsafe_") and value
        ]

    def fixed(self) -> Scenario:
        """The same run on a correct build: a broken-build scenario without its unsafe
        settings, which must then find nothing (the violations came from the break)."""
        coordinator = {
            section: {k: v for k, v in values.items() if not k.startswith("unsafe_")}
            for section, values in self.coordinator.items()
        }
        return self.model_copy(update={"coordinator": coordinator, "broken_build": False})

    @model_validator(mode="after")
    def _broken_on_purpose_or_not_at_all(self) -> Scenario:
        if self.broken_build and not self.unsafe_settings:
            raise ValueError("a broken_build scenario must switch on an unsafe_* coordinator setting")
        if self.unsafe_settings and not self.broken_build:
            raise ValueError(f"{', '.join(self.unsafe_settings)} only in a scenario with broken_build = true")
        return self

    @model_validator(mode="after")
    def _banks_come_in_pairs(self) -> Scenario:
        banks = sum(p.kind == "bank" for p in self.participants)
        if banks not in (0, 2):
            raise ValueError("a transfer needs exactly two banks (or none)")
        names = [p.name for p in self.participants]
        if len(set(names)) != len(names):
            raise ValueError("participant names must be unique")
        return self


def scenario_dir(*parts: str) -> Path:
    """Where the shipped scenarios are (``parts``: a folder of them below)."""
    return Path(str(resources.files("chaos").joinpath("scenarios", *parts)))


def load_toml(model: type[M], directory: Path, name_or_path: str | Path, what: str = "scenario") -> M:
    """``model`` from a TOML file: a name (a file in ``directory``) or a path; ValueError
    naming the known ones if there is none."""
    path = Path(name_or_path)
    if not path.suffix:
        path = directory / f"{name_or_path}.toml"
    if not path.is_file():
        known = ", ".join(p.stem for p in sorted(directory.glob("*.toml")))
        raise ValueError(f"no {what} {str(name_or_path)!r}; known: {known}")
    with path.open("rb") as f:
        return model.model_validate(tomllib.load(f))


def list_scenarios() -> list[Scenario]:
    return [load_scenario(path) for path in sorted(scenario_dir().glob("*.toml"))]


def load_scenario(name_or_path: str | Path) -> Scenario:
    """A scenario by name (a file in chaos/scenarios) or by path; ValueError if unknown."""
    return load_toml(Scenario, scenario_dir(), name_or_path)
