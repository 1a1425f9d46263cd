"""What :class:`~participant_sdk.CoordinatorClient` returns: the coordinator's answers,
typed as its OpenAPI document (``GET /openapi.json``) describes them.

The SDK does not import the coordinator, so these are the client's own models of the
same bodies (a test checks their fields against the coordinator's document). They take
what a newer coordinator adds (kept as extra fields) and default what a stub
leaves out. Each can also be read as the JSON it was decoded from, ``view["gtid"]``,
for code written when the client returned dicts; new code reads attributes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from twopc_core.protocol import Outcome

__all__ = [
    "AuditAct",
    "AuditPage",
    "Began",
    "Branch",
    "Cluster",
    "FINISHED_STATES",
    "Replica",
    "Transaction",
    "TransactionPage",
]

#: The states a transaction ends in.
FINISHED_STATES = frozenset({"committed", "aborted"})


class _Answer(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    def __getitem__(self, key: str) -> Any:
        """The field as JSON (``view["created_at"]`` is the ISO string, as sent)."""
        answer = self.model_dump(mode="json")
        return answer[key]

    def get(self, key: str, default: Any = None) -> Any:
        """The field as JSON, or ``default`` when there is no such field."""
        return self.model_dump(mode="json").get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self.model_dump(mode="json")


class Branch(_Answer):
    """One participant's branch of a transaction (the API's ``BranchView``)."""

    name: str
    #: enlisted, prepared, committed, aborted, read_only, ...
    state: str = ""
    #: It was prepared before the coordinator asked (early prepare).
    early: bool = False
    reason: str | None = None
    #: Phase 2 not acknowledged yet: the coordinator keeps retrying it.
    pending: bool = False
    #: The operator who abandoned phase 2 to this branch, and when.
    resolved_by: str | None = None
    resolved_at: datetime | None = None
    #: What an operator forced at the participant, when it differs from the decision.
    heuristic: Outcome | None = None
    vote: Literal["yes", "no", "read_only"] | None = None
    voted_at: datetime | None = None
    acknowledged_at: datetime | None = None


class Transaction(_Answer):
    """A transaction as the coordinator sees it (the API's ``TransactionOut``)."""

    gtid: str
    #: active, preparing, committing, committed, aborting, aborted.
    state: str
    #: None while undecided.
    outcome: Outcome | None = None
    reason: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    deadline: datetime | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    #: The token that began it; None when authentication was off.
    begun_by: str | None = None
    #: "mixed" when an operator forced a branch against the decision.
    heuristic: Literal["mixed"] | None = None
    branches: list[Branch] = Field(default_factory=list)

    @property
    def pending(self) -> list[str]:
        """The branches whose phase 2 the coordinator still retries."""
        return [branch.name for branch in self.branches if branch.pending]

    @property
    def done(self) -> bool:
        """Decided, and phase 2 acknowledged by every branch."""
        return self.state in FINISHED_STATES and not self.pending


class Began(_Answer):
    """The answer to begin (the API's ``BeginResponse``)."""

    gtid: str
    state: str
    deadline: datetime | None = None
    #: The Idempotency-Key had begun it before (its first answer was lost, or another
    #: client holds the same key); from the ``Idempotent-Replayed`` header.
    replayed: bool = False


class TransactionPage(_Answer):
    """One page of a listing (the API's ``TransactionList``)."""

    transactions: list[Transaction]
    #: Pass it as ``cursor`` for the next page; None on the last.
    next_cursor: str | None = None


class AuditAct(_Answer):
    """An operator's act (the API's ``AuditOut``)."""

    id: int
    at: datetime
    actor: str
    action: str
    reason: str
    gtid: str | None = None
    participant: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class AuditPage(_Answer):
    """Operators' acts, newest first (the API's ``AuditList``)."""

    acts: list[AuditAct]
    next_cursor: str | None = None


class Replica(_Answer):
    """A coordinator replica (the API's ``ReplicaView``)."""

    node_id: str
    epoch: int
    advertise_url: str
    #: Its lease had not run out, by the log database's clock.
    alive: bool
    #: None for a log of one replica.
    lease_expires_at: datetime | None = None
    taken_over_by: str | None = None
    taken_over_at: datetime | None = None
    #: The replica that answered.
    this: bool = False


class Cluster(_Answer):
    """The replicas as the one that answered sees them (the API's ``ClusterView``)."""

    node_id: str
    ready: bool
    #: False for a log only this replica uses (SQLite).
    shared_log: bool
    takeovers: int = 0
    replicas: list[Replica] = Field(default_factory=list)
