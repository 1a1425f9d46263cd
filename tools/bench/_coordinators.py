"""Which coordinators a run measures: how many replicas, over which decision log.

With the SQLite log there is one coordinator with a file of its own (the default). With
the PostgreSQL log the replicas share a database made for the run on a PostgreSQL
server, dropped afterwards, and each replica's counters are read separately.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

from tools.bench._code import ServiceCode
from tools.bench._resources import postgres_server, run_database
from tools.bench._workload import Progress

__all__ = ["LOGS", "Coordinators", "replica_deltas", "summed"]

#: The ``--log`` names.
LOGS = ("sqlite", "postgres")


@dataclass(frozen=True)
class Coordinators:
    #: The decision log's store: ``sqlite`` or ``postgres``.
    log: str = "sqlite"
    replicas: int = 1
    #: The PostgreSQL server of the postgres log's database (default: ``twopc dev up postgres``'s).
    postgres_dsn: str | None = None
    #: Whether the coordinators and participants observe their latency histograms.
    metrics: bool = True
    #: Whose code the coordinators and participants run, when two versions are compared
    #: (None: this checkout's, and no comparison of versions).
    code: ServiceCode | None = None

    def __post_init__(self) -> None:
        if self.log not in LOGS:
            raise ValueError(f"no log {self.log!r}: choose one of {', '.join(LOGS)}")
        if self.replicas < 1:
            raise ValueError("at least one coordinator replica")
        if self.replicas > 1 and self.log != "postgres":
            raise ValueError("several replicas share one decision log: they need the postgres log")

    @property
    def label(self) -> str:
        """How the report names these coordinators: ``sqlite``, ``postgres``, ``postgres x2``,
        ``sqlite, metrics off``, ``HEAD~1 (1a2b3c4), sqlite``."""
        label = self.log if self.replicas == 1 else f"{self.log} x{self.replicas}"
        label = label if self.metrics else f"{label}, metrics off"
        return label if self.code is None else f"{self.code.label}, {label}"

    @property
    def coordinator_toml(self) -> str:
        """What these settings add to the coordinators' configuration."""
        return "" if self.metrics else "\n[metrics]\nenabled = false\n"

    @asynccontextmanager
    async def log_database(self, run_id: str, progress: Progress) -> AsyncIterator[str | None]:
        """The DSN of a new database for the postgres log (dropped afterwards); ``None``
        for the SQLite log, whose files live in the run's directory."""
        if self.log != "postgres":
            yield None
            return
        server = postgres_server(self.postgres_dsn)
        progress("creating a database for the coordinators' decision log ...")
        async with run_database(server, f"twopc_bench_{run_id}_log") as dsn:
            yield dsn


def replica_deltas(
    before: Mapping[str, Mapping[str, float]], after: Mapping[str, Mapping[str, float]]
) -> dict[str, dict[str, float]]:
    """Each replica's counters over the measured part: ``after`` minus ``before``."""
    return {
        replica: {name: value - before.get(replica, {}).get(name, 0.0) for name, value in counters.items()}
        for replica, counters in after.items()
    }


def summed(by_replica: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """The replicas' counters added up, name by name."""
    total: dict[str, float] = {}
    for counters in by_replica.values():
        for name, value in counters.items():
            total[name] = total.get(name, 0.0) + value
    return total
