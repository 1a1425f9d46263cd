"""One global transaction's protocol rules, as a state machine without I/O.

The driver feeds it events (enlist, commit requested, a vote arrived, the decision
is durable, a branch acknowledged, abort) and carries out the actions it returns
(send prepares, force the decision, send commits or aborts, finish). Nothing here
touches a socket, a clock or a disk, so every rule is testable on its own.

Rules (DESIGN.md): presumed abort — only a COMMIT decision is forced, and it names
every branch that must hear phase 2; a single branch commits in one phase; all
``read_only`` votes need neither phase 2 nor a decision record; a ``no`` vote aborts
at once; once the decision is being forced the transaction can no longer abort.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from twopc_core.protocol import Outcome, Vote

__all__ = [
    "Action",
    "Branch",
    "BranchState",
    "Conflict",
    "Finish",
    "ForceDecision",
    "ProtocolError",
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


class ProtocolError(Exception):
    """An event the transaction's current state does not allow."""


class WrongState(ProtocolError):
    pass


class Conflict(ProtocolError):
    pass


@dataclass(frozen=True)
class SendPrepare:
    branches: tuple[str, ...]


@dataclass(frozen=True)
class SendOnePhase:
    branch: str


@dataclass(frozen=True)
class ForceDecision:
    """Make the COMMIT decision durable; it names every branch that must hear phase 2."""

    branches: tuple[str, ...]


@dataclass(frozen=True)
class SendCommit:
    branches: tuple[str, ...]


@dataclass(frozen=True)
class SendAbort:
    branches: tuple[str, ...]


@dataclass(frozen=True)
class Finish:
    """Every branch that needed phase 2 has acknowledged; the END record may be written."""

    outcome: Outcome


Action = SendPrepare | SendOnePhase | ForceDecision | SendCommit | SendAbort | Finish


@dataclass
class Branch:
    name: str
    payload: Any = None
    #: Enlisted already prepared (early prepare): voted yes before commit was asked.
    early: bool = False
    state: BranchState = BranchState.ENLISTED
    reason: str | None = None

    @property
    def acknowledged(self) -> bool:
        return self.state in (BranchState.COMMITTED, BranchState.ABORTED)


@dataclass
class Transaction:
    gtid: str
    state: TxState = TxState.ACTIVE
    branches: dict[str, Branch] = field(default_factory=dict)
    decision: Outcome | None = None
    reason: str | None = None
    one_phase: bool = False
    #: The commit decision has been handed to the log and may already be durable.
    deciding: bool = False
    #: The client asked for commit; a repeated commit answers the same outcome.
    commit_requested: bool = False

    # -- construction -----------------------------------------------------------

    @classmethod
    def recovered_commit(cls, gtid: str, branches: list[str]) -> tuple[Transaction, list[Action]]:
        """A transaction whose COMMIT decision was found in the log after a restart."""
        tx = cls(
            gtid=gtid,
            state=TxState.COMMITTING,
            decision=Outcome.COMMITTED,
            commit_requested=True,
            branches={name: Branch(name, state=BranchState.PREPARED) for name in branches},
        )
        return tx, tx._phase_two_actions()

    # -- events -----------------------------------------------------------------

    def enlist(self, name: str, payload: Any = None, prepared: bool = False) -> bool:
        """Add a branch; returns False when the same enlistment was already made."""
        existing = self.branches.get(name)
        if existing is not None:
            if existing.payload == payload and existing.early == prepared:
                return False
            raise Conflict(f"participant {name!r} is already enlisted with a different payload")
        if self.state is not TxState.ACTIVE:
            raise WrongState(f"cannot enlist in a transaction that is {self.state}")
        self.branches[name] = Branch(
            name,
            payload=payload,
            early=prepared,
            state=BranchState.PREPARED if prepared else BranchState.ENLISTED,
        )
        return True

    def commit(self) -> list[Action]:
        """The client asks to commit."""
        if self.commit_requested:
            return []
        if self.state is not TxState.ACTIVE:
            raise WrongState(f"cannot commit a transaction that is {self.state}")
        self.commit_requested = True
        if not self.branches:
            return self._finish(Outcome.COMMITTED)
        to_prepare = tuple(b.name for b in self.branches.values() if b.state is BranchState.ENLISTED)
        if len(self.branches) == 1 and to_prepare:
            self.state = TxState.PREPARING
            self.one_phase = True
            return [SendOnePhase(to_prepare[0])]
        self.state = TxState.PREPARING
        if not to_prepare:
            return self._decide()
        return [SendPrepare(to_prepare)]

    def vote(self, name: str, vote: Vote, reason: str | None = None) -> list[Action]:
        branch = self.branches.get(name)
        if self.state is not TxState.PREPARING or self.one_phase or branch is None:
            return []
        if branch.state is not BranchState.ENLISTED:
            return []  # a late or repeated vote changes nothing
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
        if not self.one_phase or self.state is not TxState.PREPARING or outcome is None:
            return []
        (branch,) = self.branches.values()
        if outcome is Outcome.COMMITTED:
            branch.state = BranchState.COMMITTED
        else:
            branch.state = BranchState.ABORTED
            branch.reason = reason
            self.reason = f"participant {branch.name!r} did not commit: {reason or 'aborted'}"
        return self._finish(outcome)

    def acknowledged(self, name: str) -> list[Action]:
        branch = self.branches.get(name)
        if branch is None or branch.acknowledged:
            return []
        if self.state is TxState.COMMITTING and branch.state is BranchState.PREPARED:
            branch.state = BranchState.COMMITTED
        elif self.state is TxState.ABORTING and branch.state in (BranchState.PREPARED, BranchState.ENLISTED):
            branch.state = BranchState.ABORTED
        else:
            return []
        if self.pending_branches():
            return []
        return self._finish(self.decision or Outcome.ABORTED)

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
        targets = []
        for branch in self.branches.values():
            # A branch may hold prepared work if it was prepared early, voted yes, or
            # was sent a prepare whose vote has not come back.
            holds_work = branch.state is BranchState.PREPARED or (
                branch.state is BranchState.ENLISTED and self.state is TxState.PREPARING
            )
            if holds_work:
                targets.append(branch.name)
            elif branch.state in (BranchState.ENLISTED, BranchState.FAILED):
                branch.state = BranchState.ABORTED
        if not targets:
            return self._finish(Outcome.ABORTED)
        self.state = TxState.ABORTING
        return [SendAbort(tuple(targets))]

    # -- queries ----------------------------------------------------------------

    @property
    def undecided(self) -> bool:
        return self.decision is None

    def pending_branches(self) -> tuple[str, ...]:
        """Branches that still have to acknowledge phase 2."""
        if self.state is TxState.COMMITTING:
            return tuple(b.name for b in self.branches.values() if b.state is BranchState.PREPARED)
        if self.state is TxState.ABORTING:
            return tuple(
                b.name for b in self.branches.values() if b.state in (BranchState.PREPARED, BranchState.ENLISTED)
            )
        return ()

    # -- internals --------------------------------------------------------------

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
        return [Finish(outcome)]
