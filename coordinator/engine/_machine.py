"""One global transaction's protocol rules, as a state machine without I/O.

The driver feeds it events (enlist, commit requested, a vote arrived, a record is
durable, a branch acknowledged, abort, the deadline passed, the coordinator restarted)
and carries out the actions it returns (write a record, send prepares, force the
decision, send commits or aborts, ask a participant, finish). Nothing here touches a
socket, a clock or a disk, so every rule is testable on its own, and every rule that
affects a transition lives here — among them what a logged record means after a
restart (:meth:`Transaction.from_record`, :meth:`Transaction.recover`).

Rules (DESIGN.md): presumed abort — only a COMMIT decision is forced, and it names
every branch that must hear phase 2; a single branch commits in one phase, after a
forced record that tells recovery to ask that branch; all ``read_only`` votes need
neither phase 2 nor a decision record; a ``no`` vote aborts at once; once the decision
is being forced the transaction can no longer abort; an active transaction past its
deadline is aborted, and a prepare may take only what is left of the deadline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from coordinator.records import BranchRecord, TransactionRecord
from twopc_core.protocol import BranchStatus, Outcome, Vote

__all__ = [
    "Action",
    "AskStatus",
    "Branch",
    "BranchState",
    "Conflict",
    "Finish",
    "ForceDecision",
    "ForceRecord",
    "NotifyAbort",
    "ProtocolError",
    "SaveRecord",
    "SendAbort",
    "SendCommit",
    "SendOnePhase",
    "SendPrepare",
    "Transaction",
    "TxState",
    "WrongState",
]


class TxState(StrEnum):
    ACTIVE = "active"
    PREPARING = "preparing"
    COMMITTING = "committing"
    COMMITTED = "committed"
    ABORTING = "aborting"
    ABORTED = "aborted"

    @property
    def final(self) -> bool:
        return self in (TxState.COMMITTED, TxState.ABORTED)


class BranchState(StrEnum):
    ENLISTED = "enlisted"
    PREPARED = "prepared"
    READ_ONLY = "read_only"
    FAILED = "failed"
    COMMITTED = "committed"
    ABORTED = "aborted"
    #: An operator gave up phase 2 to it (its participant is gone for good).
    ABANDONED = "abandoned"


class ProtocolError(Exception):
    """An event the transaction's current state does not allow."""


class WrongState(ProtocolError):
    pass


class Conflict(ProtocolError):
    pass


# -- actions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SaveRecord:
    """Write the transaction's record lazily: for operators, listings and recovery's
    benefit, but nothing waits for it and losing it in a crash is safe."""


@dataclass(frozen=True)
class ForceRecord:
    """Make the record of a one-phase commit durable before the branch hears of it: its
    outcome will live only at the participant, and recovery must know to ask there.
    Answer with :meth:`Transaction.record_logged` or :meth:`Transaction.record_failed`."""


@dataclass(frozen=True)
class SendPrepare:
    branches: tuple[str, ...]


@dataclass(frozen=True)
class SendOnePhase:
    branch: str


@dataclass(frozen=True)
class ForceDecision:
    """Make the COMMIT decision (:meth:`Transaction.decision_record`) durable; it names
    every branch that must hear phase 2."""

    branches: tuple[str, ...]


@dataclass(frozen=True)
class SendCommit:
    """Phase 2: send commit until each branch acknowledges."""

    branches: tuple[str, ...]


@dataclass(frozen=True)
class SendAbort:
    """Phase 2: send abort until each branch acknowledges."""

    branches: tuple[str, ...]


@dataclass(frozen=True)
class AskStatus:
    """Ask the only branch of a one-phase commit what became of it (after a restart);
    answer with :meth:`Transaction.one_phase_status`."""

    branch: str


@dataclass(frozen=True)
class NotifyAbort:
    """Tell branches that may hold prepared work that the transaction aborted, once and
    without waiting: one that misses it asks later and hears the presumed abort."""

    branches: tuple[str, ...]


@dataclass(frozen=True)
class Finish:
    """Every branch that needed phase 2 has acknowledged: write the END record, lazily
    unless ``durable``, and forget the transaction."""

    outcome: Outcome
    durable: bool = False


Action = (
    SaveRecord
    | ForceRecord
    | SendPrepare
    | SendOnePhase
    | ForceDecision
    | SendCommit
    | SendAbort
    | AskStatus
    | NotifyAbort
    | Finish
)

_SAVE = SaveRecord()

#: The least a prepare's call may take, even past the deadline (it then votes no at once).
_MIN_PREPARE_TIMEOUT = 0.001
#: A one-phase commit is asked again until it answers, so each attempt gets at least this.
_MIN_ONE_PHASE_TIMEOUT = 0.05


@dataclass
class Branch:
    name: str
    payload: Any = None
    #: Enlisted already prepared (early prepare): voted yes before commit was asked.
    early: bool = False
    state: BranchState = BranchState.ENLISTED
    reason: str | None = None
    resolved_by: str | None = None
    resolved_at: float | None = None
    #: What the participant was forced to, when that differs from the decision.
    heuristic: Outcome | None = None
    # What happened when, for people (the driver stamps the times); no rule reads these.
    vote: Vote | None = None
    voted_at: float | None = None
    acknowledged_at: float | None = None

    @property
    def acknowledged(self) -> bool:
        """Phase 2 is over for it: it acknowledged, or an operator gave it up."""
        return self.state in (BranchState.COMMITTED, BranchState.ABORTED, BranchState.ABANDONED)


@dataclass
class Transaction:
    gtid: str
    #: Unix seconds: an active transaction past it is aborted, a prepare past it votes no.
    deadline: float = math.inf
    state: TxState = TxState.ACTIVE
    branches: dict[str, Branch] = field(default_factory=dict)
    decision: Outcome | None = None
    reason: str | None = None
    one_phase: bool = False
    #: The commit decision has been handed to the log and may already be durable.
    deciding: bool = False
    #: A one-phase commit's record has been handed to the log, and nothing sent yet.
    forcing_record: bool = False
    #: The client asked for commit; a repeated commit answers the same outcome.
    commit_requested: bool = False
    #: Rebuilt from the log after a restart (its one-phase outcome is then logged durably).
    recovered: bool = False
    # What the transaction is, for people and for the API; no rule reads these.
    created_at: float = 0.0
    updated_at: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)
    idempotency_key: str | None = None
    request_hash: str | None = None
    principal: str | None = None

    # -- events -----------------------------------------------------------------

    def enlist(self, name: str, payload: Any = None, prepared: bool = False) -> list[Action]:
        """Add a branch; a repeat of the same enlistment changes nothing."""
        if self.state.final:
            raise WrongState(f"cannot enlist in a transaction that is {self.state}")
        existing = self.branches.get(name)
        if existing is not None:
            if existing.payload == payload and existing.early == prepared:
                return []
            raise Conflict(f"participant {name!r} is already enlisted with a different payload")
        if self.state is not TxState.ACTIVE:
            raise WrongState(f"cannot enlist in a transaction that is {self.state}")
        self.branches[name] = Branch(
            name,
            payload=payload,
            early=prepared,
            state=BranchState.PREPARED if prepared else BranchState.ENLISTED,
            vote=Vote.YES if prepared else None,
        )
        return [_SAVE]

    def commit(self) -> list[Action]:
        """The client asks to commit."""
        if self.commit_requested:
            return []
        if self.state is not TxState.ACTIVE:
            raise WrongState(f"cannot commit a transaction that is {self.state}")
        self.commit_requested = True
        if not self.branches:
            return self._finish(Outcome.COMMITTED)
        self.state = TxState.PREPARING
        to_prepare = tuple(b.name for b in self.branches.values() if b.state is BranchState.ENLISTED)
        if len(self.branches) == 1 and to_prepare:
            self.one_phase = True
            self.forcing_record = True
            return [ForceRecord()]
        if not to_prepare:
            return [_SAVE, *self._decide()]
        return [_SAVE, SendPrepare(to_prepare)]

    def record_logged(self) -> list[Action]:
        """The one-phase record is durable: the branch may now prepare and commit."""
        if not self.forcing_record:
            return []
        self.forcing_record = False
        (branch,) = self.branches.values()
        return [SendOnePhase(branch.name)]

    def record_failed(self, reason: str) -> list[Action]:
        """The one-phase record could not be made durable: nothing was sent, so abort."""
        if not self.forcing_record:
            return []
        self.forcing_record = False
        (branch,) = self.branches.values()
        branch.state = BranchState.ABORTED
        self.reason = f"the one-phase record could not be logged: {reason}"
        return self._finish(Outcome.ABORTED)

    def vote(self, name: str, vote: Vote, reason: str | None = None) -> list[Action]:
        branch = self.branches.get(name)
        if self.state is not TxState.PREPARING or self.one_phase or branch is None:
            return []
        if branch.state is not BranchState.ENLISTED:
            return []  # a late or repeated vote changes nothing
        branch.vote = vote
        if vote is Vote.NO:
            branch.state = BranchState.FAILED
            branch.reason = reason or "voted no"
            return self.abort(f"participant {name!r} voted no: {branch.reason}")
        branch.state = BranchState.PREPARED if vote is Vote.YES else BranchState.READ_ONLY
        if any(b.state is BranchState.ENLISTED for b in self.branches.values()):
            return []
        return self._decide()

    def decision_logged(self) -> list[Action]:
        if not self.deciding or self.state is not TxState.PREPARING:
            return []
        self.state = TxState.COMMITTING
        self.decision = Outcome.COMMITTED
        return self._phase_two_actions()

    def decision_failed(self, reason: str) -> list[Action]:
        """The log could not make the decision durable: nothing was promised, abort."""
        if not self.deciding or self.state is not TxState.PREPARING:
            return []
        self.deciding = False
        return self.abort(f"decision could not be logged: {reason}")

    def one_phase_result(self, outcome: Outcome | None, reason: str | None = None) -> list[Action]:
        """The single branch answered a one-phase commit; ``None`` means no answer yet."""
        if outcome is None or not self._one_phase_in_flight():
            return []
        (branch,) = self.branches.values()
        if outcome is Outcome.COMMITTED:
            branch.state = BranchState.COMMITTED
        else:
            branch.state = BranchState.ABORTED
            branch.reason = reason
            self.reason = f"participant {branch.name!r} did not commit: {reason or 'aborted'}"
        return self._finish(outcome)

    def one_phase_status(self, status: BranchStatus) -> list[Action]:
        """What the only branch of a recovered one-phase commit knows of it.

        Committed stays committed. Prepared is committed now: nothing was decided, and
        the branch is the whole transaction. Anything else is aborted, and the abort
        fences a one-phase commit still on its way.
        """
        if not (self.recovered and self.one_phase) or self.state is not TxState.PREPARING:
            return []
        (branch,) = self.branches.values()
        if status is BranchStatus.COMMITTED:
            branch.state = BranchState.COMMITTED
            return self._finish(Outcome.COMMITTED)
        if status is BranchStatus.PREPARED:
            branch.state = BranchState.PREPARED
            self.state = TxState.COMMITTING
            self.decision = Outcome.COMMITTED
            return [SendCommit((branch.name,))]
        self.decision = Outcome.ABORTED
        self.reason = self.reason or "coordinator restarted during a one-phase commit"
        self.state = TxState.ABORTING
        return [SendAbort((branch.name,))]

    def acknowledged(self, name: str, done: Outcome | None = None) -> list[Action]:
        """``name`` answered phase 2; ``done``: what it says it did, when an operator
        forced it there (a heuristic outcome). One that differs from the decision is
        heuristic damage: recorded on the branch, and phase 2 to it is over (what was
        done there cannot be undone from here)."""
        branch = self.branches.get(name)
        if branch is None or branch.acknowledged:
            return []
        if self.state is TxState.COMMITTING and branch.state is BranchState.PREPARED:
            branch.state = BranchState.COMMITTED
        elif self.state is TxState.ABORTING and branch.state in (BranchState.PREPARED, BranchState.ENLISTED):
            branch.state = BranchState.ABORTED
        else:
            return []
        if done is not None and done is not self.decision:
            branch.heuristic = done
            branch.state = BranchState.COMMITTED if done is Outcome.COMMITTED else BranchState.ABORTED
            branch.reason = f"forced to {done.value} at the participant, against the decision ({self.decision})"
        if self.pending_branches():
            return [_SAVE] if branch.heuristic is not None else []
        return self._finish(self.decision or Outcome.ABORTED)

    def forced_after_end(self, name: str, done: Outcome) -> list[Action]:
        """A finished transaction's branch says it was forced to ``done`` (heard when a
        best-effort abort reached it after all): heuristic damage if that differs."""
        branch = self.branches.get(name)
        if branch is None or not self.state.final or done is self.decision or branch.heuristic is done:
            return []
        branch.heuristic = done
        branch.state = BranchState.COMMITTED if done is Outcome.COMMITTED else BranchState.ABORTED
        branch.reason = f"forced to {done.value} at the participant, against the decision ({self.decision})"
        return [_SAVE]

    def abandon(self, name: str, by: str, at: float, reason: str) -> list[Action]:
        """An operator gives up phase 2 to ``name``, whose participant is gone for good:
        the decision stands and the other branches go on hearing it.

        Raises :class:`WrongState` while undecided (abandoning a vote would decide),
        and for a branch that is not waiting for phase 2.
        """
        if self.decision is None or self.state is TxState.PREPARING:
            raise WrongState(f"the transaction is {self.state} and undecided: nothing to abandon yet")
        branch = self.branches.get(name)
        if branch is None:
            raise WrongState(f"participant {name!r} has no branch in this transaction")
        if name not in self.pending_branches():
            raise WrongState(f"branch {name!r} is {branch.state}: it is not waiting for phase 2")
        branch.state = BranchState.ABANDONED
        branch.resolved_by, branch.resolved_at = by, at
        branch.reason = f"abandoned by {by}: {reason}"
        if self.pending_branches():
            return [_SAVE]
        return self._finish(self.decision)

    def abort(self, reason: str) -> list[Action]:
        """The client, the reaper or a ``no`` vote aborts the transaction."""
        if self.state in (TxState.ABORTING, TxState.ABORTED):
            return []
        if self.state in (TxState.COMMITTING, TxState.COMMITTED):
            raise WrongState(f"cannot abort a transaction that is {self.state}")
        if self.deciding:
            raise WrongState("the commit decision is already being made")
        if self.one_phase:
            raise WrongState("a one-phase commit is in progress")
        self.decision = Outcome.ABORTED
        self.reason = self.reason or reason
        targets = self._holding_work()
        for branch in self.branches.values():
            if branch.name not in targets and branch.state in (BranchState.ENLISTED, BranchState.FAILED):
                branch.state = BranchState.ABORTED
        if not targets:
            return self._finish(Outcome.ABORTED)
        self.state = TxState.ABORTING
        return [_SAVE, SendAbort(targets)]

    def expire(self, now: float) -> list[Action]:
        """The reaper's look at the transaction: past its deadline, an active one aborts."""
        if not self.expired(now):
            return []
        return self.abort("deadline exceeded")

    # -- after a restart --------------------------------------------------------

    @classmethod
    def from_record(cls, record: TransactionRecord) -> Transaction:
        """The transaction as its last logged record left it (the log keeps no payloads)."""
        return cls(
            gtid=record.gtid,
            deadline=record.deadline,
            state=TxState(record.state),
            branches={
                b.name: Branch(
                    b.name,
                    early=b.early,
                    state=BranchState(b.state),
                    reason=b.reason,
                    resolved_by=b.resolved_by,
                    resolved_at=b.resolved_at,
                    heuristic=Outcome(b.heuristic) if b.heuristic else None,
                    vote=Vote(b.vote) if b.vote else None,
                    voted_at=b.voted_at,
                    acknowledged_at=b.acknowledged_at,
                )
                for b in record.branches
            },
            decision=Outcome(record.decision) if record.decision else None,
            reason=record.reason,
            one_phase=record.one_phase,
            commit_requested=record.commit_requested,
            created_at=record.created_at,
            updated_at=record.updated_at,
            metadata=record.metadata,
            idempotency_key=record.idempotency_key,
            request_hash=record.request_hash,
            principal=record.principal,
        )

    def recover(self) -> list[Action]:
        """The coordinator restarted with this transaction unfinished in its log.

        - A COMMIT decision: phase 2 resumes to every branch the decision named; an
          acknowledgement logged before the restart is not relied on (a repeated
          commit is answered as the first).
        - A one-phase commit with no outcome: its only participant knows; ask it.
        - Anything else is undecided: presumed abort. Branches that may hold prepared
          work are told once; one that misses it asks later and hears "aborted".
        """
        self.recovered = True
        if self.state.final:
            return []
        if self.decision is Outcome.COMMITTED:
            self.state = TxState.COMMITTING
            self.commit_requested = True
            for branch in self.branches.values():
                if branch.state is BranchState.COMMITTED and branch.heuristic is None:
                    branch.state = BranchState.PREPARED
            return self._phase_two_actions()
        if self.one_phase and self.decision is None:
            (branch,) = self.branches.values()
            self.state = TxState.PREPARING
            return [AskStatus(branch.name)]
        holders = self._holding_work()
        self.decision = Outcome.ABORTED
        self.reason = self.reason or "coordinator restarted before a decision"
        for branch in self.branches.values():
            if branch.state not in (BranchState.READ_ONLY, BranchState.ABANDONED) and branch.heuristic is None:
                branch.state = BranchState.ABORTED
        finish = self._finish(Outcome.ABORTED)
        return [*finish, NotifyAbort(holders)] if holders else finish

    # -- queries ----------------------------------------------------------------

    @property
    def undecided(self) -> bool:
        return self.decision is None

    @property
    def heuristic(self) -> bool:
        """Some branch was forced against the decision (heuristic damage)."""
        return any(b.heuristic is not None for b in self.branches.values())

    def pending_branches(self) -> tuple[str, ...]:
        """Branches that still have to acknowledge phase 2."""
        if self.state is TxState.COMMITTING:
            return tuple(b.name for b in self.branches.values() if b.state is BranchState.PREPARED)
        if self.state is TxState.ABORTING:
            return tuple(
                b.name for b in self.branches.values() if b.state in (BranchState.PREPARED, BranchState.ENLISTED)
            )
        return ()

    def expired(self, now: float) -> bool:
        """Whether the reaper must abort the transaction (see :meth:`expire`)."""
        return self.state is TxState.ACTIVE and now >= self.deadline

    def prepare_timeout(self, now: float, limit: float) -> float:
        """How long a prepare sent now may take: a vote after the deadline is a ``no``."""
        return max(_MIN_PREPARE_TIMEOUT, min(limit, self.deadline - now))

    def one_phase_timeout(self, now: float, limit: float) -> float:
        """How long one attempt at the one-phase commit may take."""
        return max(_MIN_ONE_PHASE_TIMEOUT, min(limit, self.deadline - now))

    def record(self) -> TransactionRecord:
        """The record of the transaction as it stands."""
        return self._record(self.state, self.decision)

    def decision_record(self) -> TransactionRecord:
        """The record :class:`ForceDecision` makes durable. It says COMMITTING although
        the machine moves there only once it is durable: on disk, it is the decision."""
        return self._record(TxState.COMMITTING, Outcome.COMMITTED)

    # -- internals --------------------------------------------------------------

    def _one_phase_in_flight(self) -> bool:
        """A one-phase commit was sent by this incarnation and has not been answered."""
        return self.one_phase and self.state is TxState.PREPARING and not (self.forcing_record or self.recovered)

    def _holding_work(self) -> tuple[str, ...]:
        """Branches that may hold prepared work: prepared early or voted yes, or sent a
        prepare whose vote has not come back (enlisted once the prepare round began)."""
        round_began = self.state in (TxState.PREPARING, TxState.ABORTING)
        return tuple(
            b.name
            for b in self.branches.values()
            if b.state is BranchState.PREPARED or (b.state is BranchState.ENLISTED and round_began)
        )

    def _decide(self) -> list[Action]:
        phase_two = tuple(b.name for b in self.branches.values() if b.state is BranchState.PREPARED)
        if not phase_two:  # every vote was read_only: nothing to commit, nothing to log
            return self._finish(Outcome.COMMITTED)
        self.deciding = True
        return [ForceDecision(phase_two)]

    def _phase_two_actions(self) -> list[Action]:
        pending = self.pending_branches()
        if not pending:
            return self._finish(self.decision or Outcome.ABORTED)
        return [SendCommit(pending)]

    def _finish(self, outcome: Outcome) -> list[Action]:
        self.decision = outcome
        self.state = TxState.COMMITTED if outcome is Outcome.COMMITTED else TxState.ABORTED
        self.deciding = False
        # A recovered one-phase outcome was learned from the participant: until the END
        # is on disk, another restart would have to ask it again.
        return [Finish(outcome, durable=self.recovered and self.one_phase)]

    def _record(self, state: TxState, decision: Outcome | None) -> TransactionRecord:
        return TransactionRecord(
            gtid=self.gtid,
            state=state.value,
            decision=decision.value if decision else None,
            reason=self.reason,
            one_phase=self.one_phase,
            commit_requested=self.commit_requested,
            finished=state.final,
            created_at=self.created_at,
            updated_at=self.updated_at,
            deadline=self.deadline,
            metadata=self.metadata,
            idempotency_key=self.idempotency_key,
            request_hash=self.request_hash,
            principal=self.principal,
            heuristic=self.heuristic,
            branches=tuple(
                BranchRecord(
                    b.name,
                    b.state.value,
                    b.early,
                    b.reason,
                    b.resolved_by,
                    b.resolved_at,
                    b.heuristic.value if b.heuristic else None,
                    b.vote.value if b.vote else None,
                    b.voted_at,
                    b.acknowledged_at,
                )
                for b in self.branches.values()
            ),
        )
