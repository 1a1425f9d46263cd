"""The participant protocol: the messages the coordinator and a participant exchange.

Coordinator → participant, HTTP JSON, each request signed with the participant's
shared secret (see :mod:`twopc_core.signing`):

- ``POST {base}/prepare``  :class:`PrepareRequest`  → :class:`PrepareResponse`
- ``POST {base}/commit``   :class:`CommitRequest`   → :class:`OutcomeResponse`
- ``POST {base}/abort``    :class:`AbortRequest`    → :class:`OutcomeResponse`
- ``POST {base}/status``   :class:`StatusRequest`   → :class:`StatusResponse`
- ``POST {base}/batch``    ``{"ops": [BatchOp, ...]}`` → ``{"results": [...]}``, or
  with ``Accept: application/x-ndjson`` one ``{"index", "result"}`` line per op as it
  finishes; each result is the body the op would have had alone, or an error body
  (:func:`twopc_core.http.error_body`); an op may carry its transaction's
  ``traceparent``

A repeated call answers as the first one did; an abort of an unknown branch is
``aborted`` (and remembered, so that a late prepare of it votes ``no``).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AbortRequest",
    "BatchOp",
    "BranchStatus",
    "CommitRequest",
    "ForceRequest",
    "GTID_PATTERN",
    "NAME_PATTERN",
    "Outcome",
    "OutcomeResponse",
    "PrepareRequest",
    "PrepareResponse",
    "StatusRequest",
    "StatusResponse",
    "Vote",
]

#: URL-safe, at most 64 characters (DESIGN.md).
GTID_PATTERN = r"^[A-Za-z0-9._~-]{1,64}$"
#: Participant (branch) names: short, URL-safe.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"

Gtid = Annotated[str, Field(pattern=GTID_PATTERN)]
BranchName = Annotated[str, Field(pattern=NAME_PATTERN)]


class Vote(StrEnum):
    YES = "yes"
    NO = "no"
    READ_ONLY = "read_only"


class Outcome(StrEnum):
    COMMITTED = "committed"
    ABORTED = "aborted"


class BranchStatus(StrEnum):
    """What a participant's log knows of a branch."""

    UNKNOWN = "unknown"
    PREPARED = "prepared"
    COMMITTED = "committed"
    ABORTED = "aborted"


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PrepareRequest(_Message):
    gtid: Gtid
    branch: BranchName
    payload: Any = None
    #: Unix time (seconds) after which the coordinator counts the vote as ``no``.
    deadline: float


class PrepareResponse(_Message):
    vote: Vote
    reason: str | None = None


class CommitRequest(_Message):
    gtid: Gtid
    branch: BranchName
    #: Prepare and commit in one step (a transaction with a single branch).
    one_phase: bool = False
    payload: Any = None
    #: A one-phase commit's transaction deadline, as a prepare's: while it is ahead, a
    #: participant knows a branch it has not in memory is new, without reading its disk.
    deadline: float | None = None


class AbortRequest(_Message):
    gtid: Gtid
    branch: BranchName


class OutcomeResponse(_Message):
    status: Outcome
    reason: str | None = None
    #: An operator forced this outcome at the participant (it may differ from the one
    #: asked for: heuristic damage, which the coordinator records). Sent only when true.
    heuristic: bool = Field(False, exclude_if=lambda forced: not forced)


class StatusRequest(_Message):
    gtid: Gtid
    branch: BranchName


class ForceRequest(_Message):
    """An operator's heuristic outcome for an in-doubt branch (``POST {base}/force``,
    signed like the coordinator's calls): answered with the branch's status after it."""

    gtid: Gtid
    branch: BranchName
    outcome: Outcome
    reason: str | None = Field(None, max_length=1000)


class StatusResponse(_Message):
    status: BranchStatus
    #: True when an operator forced the outcome (a heuristic decision).
    heuristic: bool = False


#: A batch op's own W3C trace context: the transaction it belongs to, when that is
#: traced (a batch exchange's ``traceparent`` header is the exchange's).
_Traceparent = Annotated[str | None, Field(pattern=r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")]


class _PrepareOp(PrepareRequest):
    op: Literal["prepare"]
    traceparent: _Traceparent = None


class _CommitOp(CommitRequest):
    op: Literal["commit"]
    traceparent: _Traceparent = None


class _AbortOp(AbortRequest):
    op: Literal["abort"]
    traceparent: _Traceparent = None


class _StatusOp(StatusRequest):
    op: Literal["status"]
    traceparent: _Traceparent = None


BatchOp = Annotated[_PrepareOp | _CommitOp | _AbortOp | _StatusOp, Field(discriminator="op")]
