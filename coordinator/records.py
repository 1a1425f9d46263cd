"""What the decision log stores of a transaction: plain records, one per gtid.

The engine's machine writes them and decides what each means after a restart
(:meth:`coordinator.engine.Transaction.from_record`); the log only keeps them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["BranchRecord", "IdempotencyEntry", "TransactionRecord"]


@dataclass(frozen=True)
class BranchRecord:
    name: str
    state: str
    early: bool = False
    reason: str | None = None


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


@dataclass(frozen=True)
class IdempotencyEntry:
    gtid: str
    request_hash: str | None
    created_at: float
