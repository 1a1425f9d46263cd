"""The decision log's interface: what the engine needs from a durable store.

Presumed abort keeps it small: only a COMMIT decision is forced (and must name every
branch that must hear phase 2); everything else — begin, the start of the commit
round, aborts, the end — is written lazily, for operators and listings. The engine
keeps active transactions in memory and never reads the log on the hot path.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

from coordinator.records import IdempotencyEntry, TransactionRecord

__all__ = ["DecisionLog", "LogStats"]


@dataclass(frozen=True)
class LogStats:
    commits: int
    durable_writes: int

    @property
    def decisions_per_commit(self) -> float:
        return self.durable_writes / self.commits if self.commits else 0.0


class DecisionLog(abc.ABC):
    """A durable store of transaction records, one row per gtid, last write wins."""

    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None:
        """Make every queued write durable, then release the store."""

    @abc.abstractmethod
    def save(self, record: TransactionRecord) -> None:
        """Queue a lazy write; it becomes durable with a later forced write or soon after."""

    @abc.abstractmethod
    async def force(self, record: TransactionRecord) -> None:
        """Write ``record`` and return once it is durable (group-committed with others)."""

    @abc.abstractmethod
    async def sync(self) -> None:
        """Return once every write queued so far is durable."""

    @abc.abstractmethod
    async def get(self, gtid: str) -> TransactionRecord | None: ...

    @abc.abstractmethod
    async def page(self, state: str | None, limit: int, after_gtid: str | None) -> list[TransactionRecord]:
        """Records ordered by gtid (which is time-ordered), after ``after_gtid``."""

    @abc.abstractmethod
    async def unfinished(self) -> list[TransactionRecord]:
        """Every record not yet finished: what recovery must look at after a restart."""

    @abc.abstractmethod
    async def idempotency_keys(self, since: float) -> dict[str, IdempotencyEntry]:
        """Idempotency keys of transactions begun after ``since``, to preload at start."""

    @abc.abstractmethod
    async def prune(self, finished_before: float) -> int:
        """Remove finished transactions last updated before the given time; return how many."""

    @property
    @abc.abstractmethod
    def stats(self) -> LogStats: ...
