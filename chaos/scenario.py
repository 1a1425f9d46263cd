"""Scenarios as data: what runs, what strikes it, what must hold afterwards."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "INVARIANTS",
    "Invariant",
    "NemesisSpec",
    "ParticipantSpec",
    "Scenario",
    "WorkloadSpec",
    "list_scenarios",
    "load_scenario",
]

Invariant = Literal[
    "atomicity",
    "exactly_once",
    "durability",
    "no_effect_of_aborted",
    "liveness",
    "conservation",
    "no_prepared_left",
]
INVARIANTS: tuple[Invariant, ...] = get_args(Invariant)


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ParticipantSpec(_Spec):
    kind: Literal["mockqueue", "bank", "events"]
    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,30}$")


class NemesisSpec(_Spec):
    """One kind of fault, struck again and again during the run."""

    kind: Literal["crash-at-failpoint", "kill", "pause", "partition", "restart-service"]
    #: A node name, ``coordinator``, ``participants`` (any one of them), ``any``, or for
    #: restart-service ``postgres`` / ``kafka``.
    target: str = "any"
    #: crash-at-failpoint: the failpoint the target crashes at (armed for one hit).
    failpoint: str | None = None
    #: Seconds between strikes (jittered by the seed's random generator).
    every_s: float = Field(5.0, gt=0)
    #: How long a killed node stays down, a paused one paused, a partition cut.
    downtime_s: float = Field(1.0, ge=0)

    @model_validator(mode="after")
    def _failpoint_given(self) -> NemesisSpec:
        if self.kind == "crash-at-failpoint" and not self.failpoint:
            raise ValueError("crash-at-failpoint needs a failpoint")
        return self


class WorkloadSpec(_Spec):
    clients: int = Field(8, gt=0, le=256)
    #: Client-side timeout of one transaction's calls.
    request_timeout_s: float = Field(10.0, gt=0)


class Scenario(_Spec):
    name: str
    description: str
    seed: int = 1
    duration_s: float = Field(20.0, gt=0)
    #: After faults stop, everything must be finished within this many seconds.
    liveness_bound_s: float = Field(60.0, gt=0)
    participants: list[ParticipantSpec] = Field(min_length=1)
    workload: WorkloadSpec = WorkloadSpec()
    nemesis: list[NemesisSpec] = Field(min_length=1)
    invariants: list[Invariant] = list(INVARIANTS)
    #: Coordinator settings by section, e.g. ``[coordinator.transactions] retry_cap_ms = 200``.
    coordinator: dict[str, dict[str, Any]] = {}
    #: Only for proving that the checkers catch a broken build: see
    #: ``transactions.unsafe_lazy_decision``. Never set in a real scenario.
    broken_build: bool = False

    @property
    def kinds(self) -> set[str]:
        return {p.kind for p in self.participants}

    @model_validator(mode="after")
    def _banks_come_in_pairs(self) -> Scenario:
        banks = sum(p.kind == "bank" for p in self.participants)
        if banks not in (0, 2):
            raise ValueError("a transfer needs exactly two banks (or none)")
        names = [p.name for p in self.participants]
        if len(set(names)) != len(names):
            raise ValueError("participant names must be unique")
        return self


def _scenario_dir() -> Path:
    return Path(str(resources.files("chaos") / "scenarios"))


def list_scenarios() -> list[Scenario]:
    return [load_scenario(path) for path in sorted(_scenario_dir().glob("*.toml"))]


def load_scenario(name_or_path: str | Path) -> Scenario:
    """A scenario by name (a file in chaos/scenarios) or by path; ValueError if unknown."""
    path = Path(name_or_path)
    if not path.suffix:
        path = _scenario_dir() / f"{name_or_path}.toml"
    if not path.is_file():
        known = ", ".join(p.stem for p in sorted(_scenario_dir().glob("*.toml")))
        raise ValueError(f"no scenario {str(name_or_path)!r}; known: {known}")
    with path.open("rb") as f:
        return Scenario.model_validate(tomllib.load(f))
