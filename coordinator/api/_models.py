"""The REST API's request and response bodies; the OpenAPI document is built from them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field

from coordinator.engine import TransactionView
from twopc_core.protocol import NAME_PATTERN

__all__ = [
    "AuditList",
    "AuditOut",
    "BeginRequest",
    "BeginResponse",
    "BranchView",
    "ClusterView",
    "EnlistRequest",
    "Enlistment",
    "ErrorDetail",
    "ErrorResponse",
    "ExecuteParticipant",
    "ExecuteRequest",
    "HealthResponse",
    "OutcomeName",
    "ParticipantHealth",
    "ParticipantView",
    "ParticipantsResponse",
    "ReplicaView",
    "ResolveRequest",
    "StateName",
    "TransactionList",
    "TransactionOut",
]


class _Body(BaseModel):
    # Strict: a JSON 0 is not false, nor "5" a number; what the document says is what is taken.
    model_config = ConfigDict(extra="forbid", strict=True)


class Enlistment(_Body):
    name: str = Field(pattern=NAME_PATTERN, description="a participant registered with the coordinator")
    payload: Any = Field(None, description="sent to the participant with prepare")
    prepared: bool = Field(False, description="the branch is already prepared (early prepare): it voted yes")


class BeginRequest(_Body):
    timeout_ms: int | None = Field(None, gt=0, description="abort the transaction if not committed by then")
    metadata: dict[str, Any] | None = Field(None, description="kept with the transaction, for people")
    participants: list[Enlistment] | None = Field(None, max_length=64)


class EnlistRequest(Enlistment):
    pass


class ExecuteParticipant(_Body):
    name: str = Field(pattern=NAME_PATTERN)
    payload: Any = None


class ExecuteRequest(_Body):
    participants: list[ExecuteParticipant] = Field(min_length=1, max_length=64)
    timeout_ms: int | None = Field(None, gt=0)
    metadata: dict[str, Any] | None = None


class BranchView(BaseModel):
    name: str
    state: str
    early: bool
    reason: str | None
    pending: bool = Field(description="phase 2 not yet acknowledged; the coordinator keeps retrying")
    resolved_by: str | None = Field(None, description="the operator who abandoned phase 2 to it")
    resolved_at: datetime | None = None
    heuristic: OutcomeName | None = Field(
        None, description="what the participant was forced to, against the decision: heuristic damage"
    )
    vote: Literal["yes", "no", "read_only"] | None = Field(None, description="its vote; null before it voted")
    voted_at: datetime | None = None
    acknowledged_at: datetime | None = Field(None, description="when it acknowledged phase 2")


class ResolveRequest(_Body):
    action: Literal["abandon"] = Field(
        description="abandon: stop phase 2 to a participant that is gone for good; the decision stands"
    )
    participant: str = Field(pattern=NAME_PATTERN)
    reason: str = Field(min_length=1, max_length=1000, description="why, for the audit")


class AuditOut(BaseModel):
    id: int
    at: datetime
    actor: str = Field(description="the token that acted")
    action: str
    reason: str
    gtid: str | None
    participant: str | None
    details: dict[str, Any]


class AuditList(BaseModel):
    acts: list[AuditOut] = Field(description="newest first")
    next_cursor: str | None


StateName = Literal["active", "preparing", "committing", "committed", "aborting", "aborted"]
OutcomeName = Literal["committed", "aborted"]


class TransactionOut(BaseModel):
    gtid: str
    state: StateName
    outcome: OutcomeName | None = Field(description="null while undecided")
    reason: str | None
    created_at: datetime
    updated_at: datetime
    deadline: datetime
    metadata: dict[str, Any]
    begun_by: str | None = Field(description="the token that began it; null when authentication was off")
    heuristic: Literal["mixed"] | None = Field(
        description="mixed: a branch was forced against the decision (see its heuristic)"
    )
    branches: list[BranchView]

    @classmethod
    def of(cls, view: TransactionView) -> TransactionOut:
        # Built from the engine's own records: nothing to validate, so construct directly.
        r = view.record
        return cls.model_construct(
            gtid=r.gtid,
            state=cast(StateName, r.state),
            outcome=cast(OutcomeName | None, r.decision),
            reason=r.reason,
            created_at=_time(r.created_at),
            updated_at=_time(r.updated_at),
            deadline=_time(r.deadline),
            metadata=r.metadata,
            begun_by=r.principal,
            heuristic="mixed" if r.heuristic else None,
            branches=[
                BranchView.model_construct(
                    name=b.name,
                    state=b.state,
                    early=b.early,
                    reason=b.reason,
                    pending=b.name in view.pending,
                    resolved_by=b.resolved_by,
                    resolved_at=_time(b.resolved_at) if b.resolved_at is not None else None,
                    heuristic=cast(OutcomeName | None, b.heuristic),
                    vote=cast(Literal["yes", "no", "read_only"] | None, b.vote),
                    voted_at=_time(b.voted_at) if b.voted_at is not None else None,
                    acknowledged_at=_time(b.acknowledged_at) if b.acknowledged_at is not None else None,
                )
                for b in r.branches
            ],
        )


class BeginResponse(BaseModel):
    gtid: str
    state: str
    deadline: datetime


class TransactionList(BaseModel):
    transactions: list[TransactionOut]
    next_cursor: str | None


class ParticipantHealth(BaseModel):
    status: Literal["ok", "unreachable", "unknown"] = Field(
        description="what the last exchange with it said; unknown before the first"
    )
    checked_at: datetime | None
    error: str | None


class ParticipantView(BaseModel):
    name: str
    url: str
    health: ParticipantHealth


class ParticipantsResponse(BaseModel):
    participants: list[ParticipantView]


class ReplicaView(BaseModel):
    node_id: str
    epoch: int
    advertise_url: str
    alive: bool = Field(description="its lease had not run out, by the log database's clock")
    lease_expires_at: datetime | None = Field(description="null for a log of one replica")
    taken_over_by: str | None = Field(description="the replica that took its unfinished work over")
    taken_over_at: datetime | None
    this: bool = Field(description="the replica that answered")


class ClusterView(BaseModel):
    node_id: str = Field(description="the replica that answered")
    ready: bool
    shared_log: bool = Field(description="false for a log only this replica uses (SQLite)")
    takeovers: int = Field(description="replicas this one took over since it started")
    replicas: list[ReplicaView]


class HealthResponse(BaseModel):
    status: str
    detail: dict[str, Any] = {}


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


def _time(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)
