"""What the decision log stores of a transaction: plain records, one per gtid.

The engine's machine writes them and decides what each means after a restart
(:meth:`coordinator.engine.Transaction.from_record`); the log only keeps them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["AuditEntry", "BranchRecord", "IdempotencyEntry", "NodeRecord", "TransactionRecord"]


@dataclass(frozen=True)
class BranchRecord:
    name: str
    state: str
    early: bool = False
    reason: str | None = None
    #: An operator settled it (abandoned phase 2 to it): who, and when (unix seconds).
    resolved_by: str | None = None
    resolved_at: float | None = None
    #: The outcome the participant was forced to (heuristically), when it differs from
    #: the decision: heuristic damage.
    heuristic: str | None = None
    #: Its vote (``yes``, ``no``, ``read_only``), when it came (unix seconds), and when it
    #: acknowledged phase 2: the transaction's timeline, for people.
    vote: str | None = None
    voted_at: float | None = None
    acknowledged_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The branch as the log stores it: the optional fields only when set."""
        out: dict[str, Any] = {"name": self.name, "state": self.state, "early": self.early, "reason": self.reason}
        for key in ("resolved_by", "resolved_at", "heuristic", "vote", "voted_at", "acknowledged_at"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


@dataclass(frozen=True)
class TransactionRecord:
    gtid: str
    state: str
    decision: str | None
    created_at: float
    updated_at: float
    deadline: float
    branches: tuple[BranchRecord, ...] = ()
    reason: str | None = None
    one_phase: bool = False
    #: The client asked for commit (a repeated commit answers; one after an abort is refused).
    commit_requested: bool = False
    #: Every branch that needed phase 2 acknowledged it: the transaction may be forgotten.
    finished: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)
    idempotency_key: str | None = None
    request_hash: str | None = None
    #: Who began it (a token's name); ``None`` when authentication was off.
    principal: str | None = None
    #: Some branch's forced outcome differs from the decision (see BranchRecord.heuristic).
    heuristic: bool = False
    #: The replica that drives the transaction now, as the log knows it (set by the log on
    #: every read; a takeover moves it). ``None`` on records not read from a log.
    owner: str | None = None


@dataclass(frozen=True)
class IdempotencyEntry:
    gtid: str
    request_hash: str | None
    created_at: float


@dataclass(frozen=True)
class NodeRecord:
    """A coordinator replica as the shared log knows it. Times are unix seconds by the
    log database's clock, which alone decides whether a lease is live."""

    node_id: str
    epoch: int
    advertise_url: str
    lease_expires_at: float
    #: The lease had not run out, by the database's clock, when the row was read.
    alive: bool
    #: The replica that took this one's unfinished work over, and when.
    taken_over_by: str | None = None
    taken_over_at: float | None = None


@dataclass(frozen=True)
class AuditEntry:
    """An operator's act, as the log keeps it: who, when, what, and why."""

    #: Given by the log when the entry is written (``0`` before); later acts have larger ids.
    id: int
    at: float
    actor: str
    action: str
    reason: str
    gtid: str | None = None
    participant: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
