"""The decision log's interface: what the engine needs from a durable store.

Presumed abort keeps it small: only a COMMIT decision is forced (and must name every
branch that must hear phase 2); everything else — begin, the start of the commit
round, aborts, the end — is written lazily, for operators and listings. The engine
keeps active transactions in memory and never reads the log on the hot path.

A log may be shared by several coordinator replicas (PostgreSQL). Each replica then
joins with a new epoch and a lease on the database's clock, renews it, and every write
it makes is conditional, in the same log transaction, on that lease being live and
that epoch being its own: a replica whose lease ran out is fenced (:class:`Fenced`)
and writes nothing more. A replica takes over another whose lease ran out by bumping
that one's epoch and moving its unfinished transactions to itself. A log used by one
process only (SQLite) is a cluster of one: its lease never runs out.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass

from coordinator.records import AuditEntry, IdempotencyEntry, NodeRecord, TransactionRecord
from twopc_core.groupcommit import CommitObserver

__all__ = ["DecisionLog", "Fenced", "LogStats", "LogUnavailable", "NodeIdInUse"]


class Fenced(Exception):
    """This replica's lease ran out or its epoch was taken: the write did not happen, and
    another replica may own its transactions now. It must stop and join again."""


class NodeIdInUse(Exception):
    """Another live replica holds this node id (a configuration error: ids must differ)."""


class LogUnavailable(Exception):
    """The log's database cannot be reached, or refuses this role what the log needs."""


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
    async def page(
        self, state: str | None, limit: int, after_gtid: str | None, heuristic: bool | None = None
    ) -> list[TransactionRecord]:
        """Records ordered by gtid (which is time-ordered), after ``after_gtid``; only
        those with (or without) heuristic damage when ``heuristic`` is given."""

    @abc.abstractmethod
    async def unfinished(self) -> list[TransactionRecord]:
        """Every unfinished record this replica owns: what recovery must look at after a
        restart (or a takeover moved to it)."""

    @abc.abstractmethod
    async def idempotency_keys(self, since: float) -> dict[str, IdempotencyEntry]:
        """Idempotency keys of transactions begun after ``since``, to preload at start."""

    @abc.abstractmethod
    async def prune(self, finished_before: float) -> int:
        """Remove finished transactions last updated before the given time; return how many."""

    @property
    @abc.abstractmethod
    def stats(self) -> LogStats: ...

    def observe_commits(self, observer: CommitObserver) -> None:
        """Once open, tell ``observer`` of every commit (its duration, the forced writes
        it made durable); a log that cannot is free to ignore it."""

    @abc.abstractmethod
    async def append_audit(self, entry: AuditEntry) -> AuditEntry:
        """Write an operator's act durably; returns it with the id the log gave it."""

    @abc.abstractmethod
    async def audit(self, limit: int, before_id: int | None) -> list[AuditEntry]:
        """Operators' acts, newest first, ``limit`` of them older than ``before_id``."""

    # -- replicas ------------------------------------------------------------------------
    # What follows is a cluster of one, for a log only one process uses; a shared log
    # overrides all of it.

    _membership: NodeRecord | None = None

    @property
    def shared(self) -> bool:
        """Whether other replicas may write this log (then ``claim`` and leases matter)."""
        return False

    async def join(self, node_id: str, advertise_url: str, lease: float) -> NodeRecord:
        """Register this replica under ``node_id`` with a new epoch and a lease of ``lease``
        seconds; every later write is fenced on them. A previous incarnation's lease is
        waited out; :class:`NodeIdInUse` if another process keeps renewing it meanwhile."""
        self._membership = NodeRecord(node_id, 1, advertise_url, math.inf, True)
        return self._membership

    async def renew(self) -> NodeRecord:
        """Extend this replica's lease by the database's clock; :class:`Fenced` when it ran
        out or another replica took its epoch."""
        if self._membership is None:
            raise RuntimeError("renew before join")
        return self._membership

    async def leave(self) -> None:
        """End this replica's lease now (a clean shutdown): others may take over at once."""

    async def nodes(self) -> list[NodeRecord]:
        """Every replica the log knows, with whether its lease is live."""
        return [self._membership] if self._membership is not None else []

    async def take_over(self, node: NodeRecord) -> int | None:
        """Fence ``node`` (whose lease ran out) by bumping its epoch, and move its
        unfinished transactions to this replica; their records then come with
        :meth:`unfinished`. Returns how many moved, or ``None`` when another replica (or
        the node itself, joining again) was first."""
        return None

    async def claim(self, record: TransactionRecord) -> TransactionRecord | None:
        """Claim ``record``'s Idempotency-Key before its transaction does any work: write
        the record durably unless another transaction holds the key, and return that one's
        record (``None``: the key is ``record``'s now). A log of one replica, whose memory
        knows every key, writes the record lazily."""
        self.save(record)
        return None
