"""A row of the participant log, as plain data: what the branch rules read."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from twopc_core.protocol import Vote

__all__ = ["BranchRecord", "RecordState"]


class RecordState(StrEnum):
    """The state of a branch as its row in the participant log records it."""

    PREPARED = "prepared"
    COMMITTED = "committed"
    ABORTED = "aborted"
    READ_ONLY = "read_only"

    @property
    def finished(self) -> bool:
        return self is not RecordState.PREPARED


@dataclass(frozen=True, slots=True)
class BranchRecord:
    """What the participant log holds for one ``(gtid, branch)``."""

    gtid: str
    branch: str
    status: RecordState
    #: The vote this participant gave, if a prepare (or an early branch) wrote the row.
    vote: Vote | None
    reason: str | None
    #: The digest of the prepared work, to tell a repeated prepare from one with other work.
    payload_hash: str | None
    created_at: float
    updated_at: float
    #: True when an operator forced the outcome.
    heuristic: bool = False
    #: The transaction's deadline as its prepare gave it (unix seconds), if any.
    deadline: float | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.gtid, self.branch)
