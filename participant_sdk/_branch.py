"""One branch's protocol rules at a participant, as pure functions without I/O.

A branch's state is its row in the participant log (``None``: never seen here). Each
function takes that row and one event (a protocol call, the resource's vote, the
coordinator's answer to an inquiry or an enlistment, an operator's heuristic, a
restart) and returns what the driver, :class:`participant_sdk._core.BranchHandler`,
must do:

- a protocol response: answer it as it is, nothing else to do;
- :data:`PREPARE_AT_RESOURCE`: ask the resource to stage the work and vote, then
  count the vote with :func:`counted_vote` and carry out :func:`log_of_vote`;
- a :class:`LogVote`: log the vote (durably only for a YES), first dropping staged
  work for a NO;
- an :class:`Apply`: commit or abort the branch at the resource, then log the outcome;
- :data:`REMEMBER_ABORT`: log the branch aborted without touching the resource;
- a :class:`Reconcile` member, for a branch the resource holds prepared after a start;

or it raises the :class:`~participant_sdk.errors.ParticipantError` that refuses the
call. Nothing here awaits, reads a clock or touches a disk or a socket, so each rule
can be tested on its own; the answers that never vary are built once.

The rules (DESIGN.md, "Participant protocol"): a call answers as the first for its
branch did; a YES is on disk before it leaves (in the participant log, or in the
resource itself where it holds its branches' state); a branch that voted YES waits for the
coordinator (phase 2, or its answer to an inquiry) and never decides on its own,
unless an operator forces a heuristic outcome, which is logged durably and reported;
an abort of a branch never prepared here is remembered, so a late prepare votes no; a
committed branch refuses to abort; a one-phase commit goes through a durably logged
prepare; presumed abort: a coordinator with no record of a transaction means abort.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

import orjson
from pydantic import BaseModel

from participant_sdk._records import BranchRecord, RecordState
from participant_sdk.errors import (
    AlreadyCommitted,
    BranchExists,
    CoordinatorUnreachable,
    EnlistFailed,
    EnlistRefused,
    LogWriteFailed,
    NotInDoubt,
    NotPrepared,
    PayloadMismatch,
    ResourceFailed,
)
from participant_sdk.resource import PrepareResult
from twopc_core.protocol import BranchStatus, Outcome, OutcomeResponse, PrepareResponse, StatusResponse, Vote

__all__ = [
    "ADOPTED_REASON",
    "PREPARE_AT_RESOURCE",
    "REMEMBER_ABORT",
    "Apply",
    "LogVote",
    "PrepareAtResource",
    "Reconcile",
    "RememberAbort",
    "abort",
    "commit",
    "commit_one_phase",
    "coordinator_has_no_record",
    "coordinator_unreachable",
    "counted_vote",
    "describe",
    "early_branch",
    "early_yes_not_logged",
    "enlist_failed",
    "enlist_refused",
    "enlistment_refused",
    "failed_prepare",
    "force",
    "log_of_vote",
    "one_phase_voted",
    "outcome_for_branch",
    "payload_hash",
    "prepare",
    "prepare_answer",
    "reconcile",
    "resolve",
    "resource_failed",
    "row_from_resource",
    "status",
    "vote_answer",
    "yes_not_logged",
]

_MAX_REASON = 500
#: The reason logged for a branch the resource held that the log did not know.
ADOPTED_REASON = "found prepared in the resource"


# -- what the driver must do ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PrepareAtResource:
    """Ask the resource to stage the branch's work and vote."""


@dataclass(frozen=True, slots=True)
class RememberAbort:
    """Log the branch in ``state`` (aborted), lazily, without touching the resource
    (there is nothing there to drop), then answer ``answer``."""

    state: RecordState
    answer: OutcomeResponse


@dataclass(frozen=True, slots=True)
class LogVote:
    """Log a vote as the branch's row, in ``state``.

    ``durable``: the write must be on disk before the vote leaves (a YES: a promise the
    resource must keep after a crash). A NO or a READ_ONLY staged nothing that a lost
    row would leave behind, so their writes ride with the next group commit.
    ``drop_staged``: abort at the resource first, quietly (the NO's reason already says
    what went wrong), to drop whatever a failed prepare staged.
    """

    vote: Vote
    state: RecordState
    durable: bool
    drop_staged: bool


@dataclass(frozen=True, slots=True)
class Apply:
    """Commit or abort a prepared branch at the resource, then log ``outcome``.

    The coordinator's outcome is logged lazily (not ``durable``): the resource's commit
    and abort are idempotent, and until the row is on disk the branch reads as
    prepared, so a restart asks the coordinator again and applies the same outcome. A
    ``heuristic`` outcome is the participant's own decision: it is logged durably, as
    it must survive a crash.
    """

    outcome: Outcome
    state: RecordState
    durable: bool
    heuristic: bool
    #: The reason logged with a heuristic outcome (``None``: the row's stays).
    reason: str | None
    #: The answer to the call that applied it.
    answer: OutcomeResponse


class Reconcile(Enum):
    """What to do with a branch the resource holds prepared, given its row."""

    #: Unknown to the log: staged before a crash took the YES off the wire. Log it
    #: prepared, durably, with :data:`ADOPTED_REASON`; the in-doubt loop then asks.
    ADOPT = "adopt"
    #: Logged committed: commit it at the resource again.
    COMMIT_AGAIN = "commit_again"
    #: Logged aborted or read-only: abort it at the resource again.
    ABORT_AGAIN = "abort_again"
    #: Logged prepared: in doubt, the in-doubt loop settles it.
    KEEP = "keep"


_YES = PrepareResponse(vote=Vote.YES)
_COMMITTED = OutcomeResponse(status=Outcome.COMMITTED)
_ABORTED = OutcomeResponse(status=Outcome.ABORTED)

PREPARE_AT_RESOURCE = PrepareAtResource()
REMEMBER_ABORT = RememberAbort(RecordState.ABORTED, _ABORTED)

_LOG_OF_VOTE: Mapping[Vote, LogVote] = {
    Vote.YES: LogVote(Vote.YES, RecordState.PREPARED, durable=True, drop_staged=False),
    Vote.READ_ONLY: LogVote(Vote.READ_ONLY, RecordState.READ_ONLY, durable=False, drop_staged=False),
    Vote.NO: LogVote(Vote.NO, RecordState.ABORTED, durable=False, drop_staged=True),
}
#: The same, at a resource that holds its branches' state: its prepare made the YES
#: durable, so the log's row of it is a cache, written lazily.
_LOG_OF_VOTE_HELD: Mapping[Vote, LogVote] = {
    **_LOG_OF_VOTE,
    Vote.YES: LogVote(Vote.YES, RecordState.PREPARED, durable=False, drop_staged=False),
}
#: A branch's status at a resource that holds it, as the log row it stands for.
_STATE_OF_STATUS: Mapping[BranchStatus, RecordState] = {
    BranchStatus.PREPARED: RecordState.PREPARED,
    BranchStatus.COMMITTED: RecordState.COMMITTED,
    BranchStatus.ABORTED: RecordState.ABORTED,
}
_APPLY_COMMIT = Apply(
    Outcome.COMMITTED, RecordState.COMMITTED, durable=False, heuristic=False, reason=None, answer=_COMMITTED
)
_APPLY_ABORT = Apply(Outcome.ABORTED, RecordState.ABORTED, durable=False, heuristic=False, reason=None, answer=_ABORTED)
_APPLY: Mapping[Outcome, Apply] = {Outcome.COMMITTED: _APPLY_COMMIT, Outcome.ABORTED: _APPLY_ABORT}
_FORCE: Mapping[Outcome, Apply] = {
    outcome: Apply(
        outcome,
        plain.state,
        durable=True,
        heuristic=True,
        reason=f"heuristic {outcome.value} by operator",
        answer=plain.answer,
    )
    for outcome, plain in _APPLY.items()
}
_COUNTED_YES = PrepareResult(Vote.YES)
_YES_NOT_LOGGED = PrepareResult(Vote.NO, "participant log write failed")

_STATUS_OF: Mapping[RecordState, BranchStatus] = {
    RecordState.PREPARED: BranchStatus.PREPARED,
    RecordState.COMMITTED: BranchStatus.COMMITTED,
    RecordState.ABORTED: BranchStatus.ABORTED,
    # A read-only branch has nothing to undo and nothing left to apply: as good as committed.
    RecordState.READ_ONLY: BranchStatus.COMMITTED,
}
_UNKNOWN = StatusResponse(status=BranchStatus.UNKNOWN)
_STATUS_ANSWERS: Mapping[tuple[RecordState, bool], StatusResponse] = {
    (state, heuristic): StatusResponse(status=status, heuristic=heuristic)
    for state, status in _STATUS_OF.items()
    for heuristic in (False, True)
}

#: Coordinator answers to an early branch's enlistment that mean it will never commit
#: with the branch: no such transaction (404), one no longer active (409), a
#: participant it does not know (422).
_ENLISTMENT_REFUSALS = frozenset({404, 409, 422})


# -- helpers ------------------------------------------------------------------------------


def payload_hash(payload: Any) -> str | None:
    """A stable digest of a payload, to notice a repeated call that carries other work."""
    if payload is None:
        return None
    try:
        data = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # integers past 64 bits, which orjson refuses
        data = repr(payload).encode()
    return hashlib.sha256(data).hexdigest()


def describe(exc: BaseException) -> str:
    """An exception as a short reason, for a vote or an error message."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text[:_MAX_REASON]


def _details(gtid: str, branch: str) -> dict[str, Any]:
    return {"gtid": gtid, "branch": branch}


def _check_same_work(row: BranchRecord, digest: str | None) -> None:
    # Only rows written by a prepare carry the digest of their work; an abort of an
    # unknown branch, for one, has no payload to compare with.
    if row.vote is not None and row.payload_hash != digest:
        raise PayloadMismatch(
            f"branch {row.branch} of {row.gtid} was already prepared with another payload",
            _details(row.gtid, row.branch),
        )


def prepare_answer(row: BranchRecord) -> PrepareResponse:
    """What a prepare of a branch the log knows answers: its vote, from the row."""
    if row.status is RecordState.READ_ONLY:
        return PrepareResponse(vote=Vote.READ_ONLY, reason=row.reason)
    if row.status is RecordState.ABORTED:
        reason = row.reason if row.vote is Vote.NO and row.reason else "already aborted"
        return PrepareResponse(vote=Vote.NO, reason=reason)
    return _YES


def _outcome_answer(row: BranchRecord) -> OutcomeResponse:
    """What a commit of a finished branch answers: its outcome, from the row. A
    heuristic outcome says so in its reason, and a read-only branch repeats its vote's."""
    if row.heuristic:
        status = Outcome.ABORTED if row.status is RecordState.ABORTED else Outcome.COMMITTED
        return OutcomeResponse(status=status, reason=row.reason, heuristic=True)
    if row.status is RecordState.ABORTED:
        return _ABORTED if row.reason is None else OutcomeResponse(status=Outcome.ABORTED, reason=row.reason)
    if row.reason is not None and row.status is RecordState.READ_ONLY:
        return OutcomeResponse(status=Outcome.COMMITTED, reason=row.reason)
    return _COMMITTED


# -- prepare ------------------------------------------------------------------------------


def prepare(row: BranchRecord | None, digest: str | None) -> PrepareResponse | PrepareAtResource:
    """A prepare of work with ``digest``: prepare it at the resource if the branch is new,
    else answer as the first prepare did (or as the remembered abort says: no).

    Raises :class:`PayloadMismatch` for a repeated prepare of other work.
    """
    if row is None:
        return PREPARE_AT_RESOURCE
    _check_same_work(row, digest)
    return prepare_answer(row)


def failed_prepare(exc: BaseException) -> PrepareResult:
    """A resource's prepare that raised: a NO vote, the exception its reason."""
    return PrepareResult(Vote.NO, describe(exc))


def counted_vote(result: PrepareResult) -> PrepareResult:
    """The vote as it is logged and answered: a NO always carries a reason, a YES none."""
    if result.vote is Vote.YES:
        return _COUNTED_YES
    if result.vote is Vote.NO and not result.reason:
        return PrepareResult(Vote.NO, "resource voted no")
    return result


def log_of_vote(vote: Vote, held_by_resource: bool = False) -> LogVote:
    """How a counted vote is logged: a YES durably before it leaves, unless the resource
    holds the branch's state (``held_by_resource``): then its own prepare made the YES
    durable, :meth:`~participant_sdk.Resource.recover` lists it after a crash, and the
    row only caches it."""
    return (_LOG_OF_VOTE_HELD if held_by_resource else _LOG_OF_VOTE)[vote]


def yes_not_logged() -> PrepareResult:
    """The vote instead of a YES whose log write failed: a YES not on disk would not
    survive a restart, so it is taken back before anyone hears it."""
    return _YES_NOT_LOGGED


def vote_answer(result: PrepareResult) -> PrepareResponse:
    """The answer to the prepare that logged the counted vote ``result``."""
    if result.vote is Vote.YES:
        return _YES
    return PrepareResponse(vote=result.vote, reason=result.reason)


# -- commit -------------------------------------------------------------------------------


def commit(row: BranchRecord | None, gtid: str, branch: str) -> OutcomeResponse | Apply:
    """Phase 2's commit: apply it to a prepared branch, else answer the logged outcome.

    Raises :class:`NotPrepared` for a branch the log does not know.
    """
    if row is None:
        raise NotPrepared(f"branch {branch} of {gtid} is not prepared here", _details(gtid, branch))
    if row.status is not RecordState.PREPARED:
        return _outcome_answer(row)
    return _APPLY_COMMIT


def commit_one_phase(row: BranchRecord | None, digest: str | None) -> OutcomeResponse | Apply | PrepareAtResource:
    """A one-phase commit of work with ``digest``: a new branch is prepared first (its
    YES logged durably, like any), then committed; a known one is committed if still
    prepared, else answered its logged outcome. Next after a prepare: :func:`one_phase_voted`.

    The durable prepare is what makes a crash safe: between the resource's commit and
    its log row, the branch reads as prepared (in doubt, and the coordinator settles it
    with a commit), never as unknown (which a recovering coordinator would abort).

    Raises :class:`PayloadMismatch` for a repeated call with other work.
    """
    if row is None:
        return PREPARE_AT_RESOURCE
    _check_same_work(row, digest)
    if row.status is not RecordState.PREPARED:
        return _outcome_answer(row)
    return _APPLY_COMMIT


def one_phase_voted(vote: PrepareResponse) -> OutcomeResponse | Apply:
    """After a one-phase commit's prepare answered ``vote``: commit a YES; a NO is the
    outcome aborted, a READ_ONLY committed (nothing to apply), each with its reason."""
    if vote.vote is Vote.YES:
        return _APPLY_COMMIT
    if vote.vote is Vote.NO:
        return OutcomeResponse(status=Outcome.ABORTED, reason=vote.reason)
    return _COMMITTED if vote.reason is None else OutcomeResponse(status=Outcome.COMMITTED, reason=vote.reason)


# -- abort --------------------------------------------------------------------------------


def abort(row: BranchRecord | None, gtid: str, branch: str) -> OutcomeResponse | Apply | RememberAbort:
    """Phase 2's abort: apply it to a prepared branch; remember it for a branch never
    prepared here (or read-only), so that a late prepare votes no; answer ``aborted``
    for one already aborted, and what was done for one an operator forced.

    Raises :class:`AlreadyCommitted` for a committed branch no operator forced.
    """
    if row is None:
        return REMEMBER_ABORT
    if row.heuristic and row.status is RecordState.COMMITTED:
        return _outcome_answer(row)  # heuristic damage: the coordinator records it
    if row.status is RecordState.COMMITTED:
        raise AlreadyCommitted(
            f"branch {branch} of {gtid} is already committed",
            {"gtid": gtid, "branch": branch, "heuristic": row.heuristic},
        )
    if row.status is RecordState.ABORTED:
        return _ABORTED
    if row.status is RecordState.PREPARED:
        return _APPLY_ABORT
    return REMEMBER_ABORT


def resource_failed(outcome: Outcome, gtid: str, branch: str, exc: BaseException) -> ResourceFailed:
    """The error for a resource that failed to apply ``outcome``: the branch stays
    prepared, and the call may be repeated."""
    verb = "commit" if outcome is Outcome.COMMITTED else "abort"
    return ResourceFailed(f"{verb} failed: {describe(exc)}", _details(gtid, branch))


# -- status -------------------------------------------------------------------------------


def status(row: BranchRecord | None) -> StatusResponse:
    """What the log knows of a branch, and whether an operator decided it."""
    if row is None:
        return _UNKNOWN
    return _STATUS_ANSWERS[row.status, row.heuristic]


# -- outcomes learnt elsewhere --------------------------------------------------------------


def resolve(row: BranchRecord | None, outcome: Outcome) -> Apply | None:
    """The coordinator's outcome for a branch (an inquiry's answer, a refused
    enlistment): apply it if the branch is still prepared; ``None``: nothing to do."""
    if row is None or row.status is not RecordState.PREPARED:
        return None
    return _APPLY[outcome]


def force(row: BranchRecord | None, outcome: Outcome, gtid: str, branch: str) -> Apply:
    """An operator's heuristic outcome for an in-doubt branch: applied, and logged
    durably as heuristic, so ``status`` reports it and a coordinator's phase 2 that
    differs is answered with what was done here.

    Raises :class:`NotInDoubt` for a branch that is not prepared here.
    """
    if row is None or row.status is not RecordState.PREPARED:
        raise NotInDoubt(f"branch {branch} of {gtid} is not prepared here", _details(gtid, branch))
    return _FORCE[outcome]


def outcome_for_branch(view: dict[str, Any] | BaseModel | None, branch: str) -> Outcome | None:
    """What a branch prepared here must do, from the coordinator's view of its
    transaction (``None`` when the coordinator has no record of it): the outcome, or
    ``None`` while the transaction is undecided (or its outcome is one we cannot read).

    No record is presumed abort. A committed transaction whose view names its branches
    but not this one decided without this branch's vote, so the branch aborts.
    """
    if view is None:
        return Outcome.ABORTED
    if isinstance(view, BaseModel):  # a Transaction from CoordinatorClient.get: read it as sent
        view = view.model_dump(mode="json")
    outcome = _outcome_of(view)
    if outcome is Outcome.COMMITTED:
        branches = view.get("branches")
        if isinstance(branches, list) and branch not in {b.get("name") for b in branches if isinstance(b, dict)}:
            return Outcome.ABORTED
    return outcome


def _outcome_of(view: object) -> Outcome | None:
    # null means undecided; anything else we cannot act on, so we wait as well
    value = view.get("outcome") if isinstance(view, dict) else None
    if not isinstance(value, str):
        return None
    try:
        return Outcome(value)
    except ValueError:
        return None


def coordinator_has_no_record(status: int) -> bool:
    """Whether an inquiry answered with this error status means the coordinator has no
    record of the transaction (presumed abort), rather than "ask again later"."""
    return status == 404


# -- early prepare ------------------------------------------------------------------------


def early_branch(row: BranchRecord | None, gtid: str, branch: str, held_by_resource: bool = False) -> LogVote:
    """An early branch (the application's work, done before any prepare): how its YES
    is logged once the resource has prepared it (durably, before anyone hears it, unless
    the resource holds the branch's state: see :func:`log_of_vote`).

    Raises :class:`BranchExists` for a branch the log knows.
    """
    if row is not None:
        raise BranchExists(
            f"branch {branch} of {gtid} is already {row.status.value} here",
            {"gtid": gtid, "branch": branch, "status": row.status.value},
        )
    return log_of_vote(Vote.YES, held_by_resource)


def early_yes_not_logged(gtid: str, branch: str, exc: BaseException) -> LogWriteFailed:
    """The error for an early branch whose YES could not be logged. Nobody has heard of
    that YES yet, so taking it back is still allowed: the driver drops the work first."""
    return LogWriteFailed(f"participant log write failed: {describe(exc)}", _details(gtid, branch))


def enlistment_refused(status: int) -> bool:
    """Whether the coordinator's error status for an early branch's enlistment is a
    definite refusal (the branch must abort), rather than "stay in doubt"."""
    return status in _ENLISTMENT_REFUSALS


def enlist_refused(gtid: str, branch: str, code: str, message: str) -> EnlistRefused:
    return EnlistRefused(
        f"the coordinator refused to enlist {branch} in {gtid}: {message}; the branch was aborted",
        {"gtid": gtid, "branch": branch, "coordinator_error": code},
    )


def enlist_failed(gtid: str, branch: str, error: str) -> EnlistFailed:
    return EnlistFailed(
        f"enlisting {branch} in {gtid} failed: {error}; the branch stays in doubt", _details(gtid, branch)
    )


def coordinator_unreachable(gtid: str, branch: str, error: str) -> CoordinatorUnreachable:
    return CoordinatorUnreachable(
        f"enlisting {branch} in {gtid} failed: {error}; the branch stays in doubt", _details(gtid, branch)
    )


# -- start-up ------------------------------------------------------------------------------


def row_from_resource(gtid: str, branch: str, status: BranchStatus, now: float) -> BranchRecord | None:
    """The row a branch the log does not know stands for, from what a resource that
    holds its branches' state says of it (``None``: unknown there too).

    The log lost it in a crash (its row was written lazily); the resource's word is the
    durable one. Like an adopted row, it carries no vote, so a repeated prepare is not
    compared with its work.
    """
    state = _STATE_OF_STATUS.get(status)
    if state is None:
        return None
    reason = ADOPTED_REASON if state is RecordState.PREPARED else None
    return BranchRecord(gtid, branch, state, None, reason, None, now, now)


def reconcile(row: BranchRecord | None) -> Reconcile:
    """A branch the resource holds prepared at a start (or a sweep), given its row."""
    if row is None:
        return Reconcile.ADOPT
    if row.status is RecordState.COMMITTED:
        return Reconcile.COMMIT_AGAIN
    if row.status is RecordState.PREPARED:
        return Reconcile.KEEP
    return Reconcile.ABORT_AGAIN
