"""Random event sequences against one transaction's state machine, crashes included.

The test keeps its own record of what the driver told the machine, what the machine
asked for and what the log may hold, and checks the protocol's rules against that
record after every step, without looking at how the machine reaches its answers.

A crash picks any record the log can hold at that moment — the last durable write, or
any later write that may have made it to disk (writes reach the disk in order; a
forced write not yet confirmed may or may not have) — rebuilds the transaction from
it as a restarted coordinator does, and goes on driving the recovered transaction.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from coordinator.engine import (
    Action,
    AskStatus,
    BranchState,
    Conflict,
    Finish,
    ForceDecision,
    ForceRecord,
    NotifyAbort,
    ProtocolError,
    SaveRecord,
    SendAbort,
    SendCommit,
    SendOnePhase,
    SendPrepare,
    Transaction,
    WrongState,
)
from coordinator.records import TransactionRecord
from twopc_core.protocol import BranchStatus, Outcome, Vote

NAMES = ("a", "b", "c", "d")
names = st.sampled_from(NAMES)
payloads = st.sampled_from([None, {"n": 1}, {"n": 2}])
DEADLINE = 100.0

_COMMITTED_STATUSES = (BranchStatus.COMMITTED, BranchStatus.PREPARED)
_ANY_STATUS = frozenset(BranchStatus)


@dataclass
class Write:
    """A record handed to the log: lazily, or forced and ``pending`` until the log answers."""

    record: TransactionRecord
    status: str  # "lazy", "pending", "durable" or "failed"


class TransactionMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tx = Transaction(gtid="g", deadline=DEADLINE)
        self._new_incarnation()
        # -- what outlives a crash ------------------------------------------------
        #: Every record handed to the log, in order.
        self.writes: list[Write] = []
        self.ever_commit_sent: set[str] = set()
        #: Branches ever sent an abort, or told of one after a restart.
        self.ever_abort_sent: set[str] = set()
        #: Branches that may hold prepared work, as far as any incarnation knows.
        self.ever_may_hold: set[str] = set()
        #: The outcome a finished incarnation settled on, where a restart must keep it.
        self.settled: Outcome | None = None
        #: What the only participant of a one-phase commit may report about it.
        self.one_phase_possible: frozenset[BranchStatus] = frozenset({BranchStatus.UNKNOWN})
        self.one_phase_ever_sent = False
        #: The log holds nothing at all: the transaction is presumed aborted for ever.
        self.gone = False

    def _new_incarnation(self) -> None:
        """What one coordinator process knows; a crash forgets it."""
        self.actions: list[Action] = []
        #: Branches enlisted already prepared (as far as the driver knows).
        self.early: set[str] = set()
        #: Branches that were sent a prepare, and the first vote each gave after it.
        self.prepare_sent: set[str] = set()
        self.first_vote: dict[str, Vote] = {}
        self.forced: tuple[str, ...] | None = None
        #: What the log said first after the decision was forced: "logged" or "failed".
        self.force_result: str | None = None
        self.record_forced = False
        self.record_result: str | None = None
        self.commit_sent: set[str] = set()
        self.abort_sent: set[str] = set()
        #: Branches sent phase 2 that have not acknowledged since.
        self.unacked: set[str] = set()
        self.finished: Outcome | None = None
        self.decisions_seen: list[Outcome] = []
        self.one_phase_sent: str | None = None
        self.one_phase_answer: Outcome | None = None
        #: Enlistments the machine accepted: name -> (payload, prepared).
        self.enlisted: dict[str, tuple[object, bool]] = {}
        self.commit_accepted = False
        self.abort_accepted_before_commit = False
        #: Forced writes this incarnation handed to the log, by kind: index into ``writes``.
        self.unconfirmed: dict[type[object], int] = {}
        #: A recovered one-phase commit waits for its branch's status.
        self.asking: str | None = None
        self.status_answer: BranchStatus | None = None

    # -- start ------------------------------------------------------------------

    @initialize(
        branches=st.lists(st.tuples(names, st.booleans(), payloads), unique_by=lambda b: b[0], min_size=1, max_size=4),
        commit_at_once=st.booleans(),
    )
    def start(self, branches: list[tuple[str, bool, object]], commit_at_once: bool) -> None:
        """Begin with some branches enlisted, and often with commit already asked for,
        so that short runs reach the prepare and commit rounds too."""
        for name, prepared, payload in branches:
            self.enlist(name, prepared, payload)
        if commit_at_once:
            self.commit()

    def _some_branch(self, data: st.DataObject) -> str:
        """Mostly a branch of this transaction, sometimes a stranger."""
        if self.tx.branches and data.draw(st.integers(0, 4)):
            return data.draw(st.sampled_from(sorted(self.tx.branches)))
        return data.draw(names)

    def _alive(self) -> bool:
        return not self.gone

    # -- events -----------------------------------------------------------------

    @precondition(_alive)
    @rule(name=names, prepared=st.booleans(), payload=payloads)
    def enlist(self, name: str, prepared: bool, payload: object) -> None:
        before = copy.deepcopy(self.tx)
        try:
            actions = self.tx.enlist(name, payload=payload, prepared=prepared)
        except Conflict:
            assert name in self.enlisted and self.enlisted[name] != (payload, prepared)
            assert self.tx == before, "a refused enlist changed the transaction"
            return
        except WrongState:
            assert name not in self.enlisted or before.state.final, "a repeated enlist must answer as the first did"
            assert before.state != "active", "enlist refused while active"
            assert self.tx == before, "a refused enlist changed the transaction"
            return
        if actions:
            assert name not in self.enlisted, "the same name enlisted twice"
            assert before.state == "active", "enlisted into a transaction that is not active"
            self.enlisted[name] = (payload, prepared)
            if prepared:
                self.early.add(name)
                self.ever_may_hold.add(name)
        else:
            assert self.enlisted.get(name) == (payload, prepared), "wrongly answered 'already enlisted'"
            assert self.tx == before, "a repeated enlist changed the transaction"
        self._apply("enlist", actions)

    @precondition(_alive)
    @rule()
    def commit(self) -> None:
        before = copy.deepcopy(self.tx)
        try:
            actions = self.tx.commit()
        except WrongState:
            assert not self.commit_accepted, "a repeated commit must answer, not be refused"
            assert self.abort_accepted_before_commit or before.state != "active"
            assert self.tx == before, "a refused commit changed the transaction"
            return
        if self.commit_accepted:
            assert actions == [], "a repeated commit started something again"
        assert not self.abort_accepted_before_commit, "commit accepted after the client aborted"
        self.commit_accepted = True
        self._apply("commit", actions)

    @precondition(_alive)
    @rule(data=st.data(), vote=st.sampled_from(Vote), reason=st.sampled_from([None, "full"]))
    def vote(self, data: st.DataObject, vote: Vote, reason: str | None) -> None:
        name = self._some_branch(data)
        if name in self.prepare_sent and name not in self.first_vote:
            self.first_vote[name] = vote
        self._event("vote", lambda: self.tx.vote(name, vote, reason))

    @precondition(_alive)
    @rule()
    def decision_logged(self) -> None:
        if self.forced is not None and self.force_result is None:
            self.force_result = "logged"
            self._resolve(ForceDecision, "durable")
        self._event("decision_logged", self.tx.decision_logged)

    @precondition(_alive)
    @rule(reason=st.just("disk I/O error"))
    def decision_failed(self, reason: str) -> None:
        if self.forced is not None and self.force_result is None:
            self.force_result = "failed"
            self._resolve(ForceDecision, "failed")
        self._event("decision_failed", lambda: self.tx.decision_failed(reason))

    @precondition(_alive)
    @rule()
    def record_logged(self) -> None:
        if self.record_forced and self.record_result is None:
            self.record_result = "logged"
            self._resolve(ForceRecord, "durable")
        self._event("record_logged", self.tx.record_logged)

    @precondition(_alive)
    @rule()
    def record_failed(self) -> None:
        if self.record_forced and self.record_result is None:
            self.record_result = "failed"
            self._resolve(ForceRecord, "failed")
        self._event("record_failed", lambda: self.tx.record_failed("disk full"))

    @precondition(_alive)
    @rule(outcome=st.sampled_from([None, Outcome.COMMITTED, Outcome.ABORTED]))
    def one_phase_result(self, outcome: Outcome | None) -> None:
        if self.one_phase_sent is not None and self.one_phase_answer is None:
            self.one_phase_answer = outcome
            if outcome is not None:
                self.one_phase_possible = frozenset(
                    {BranchStatus.COMMITTED if outcome is Outcome.COMMITTED else BranchStatus.ABORTED}
                )
        elif outcome is not None:
            return  # a participant answers only what it was sent
        self._event("one_phase_result", lambda: self.tx.one_phase_result(outcome, "no"))

    @precondition(lambda self: not self.gone and self.asking is not None and self.status_answer is None)
    @rule(data=st.data())
    def one_phase_status(self, data: st.DataObject) -> None:
        status = data.draw(st.sampled_from(sorted(self.one_phase_possible)))
        self.status_answer = status
        if status is not BranchStatus.UNKNOWN:  # "unknown" may yet turn: a late commit can land
            self.one_phase_possible = frozenset({status})
        self._event("one_phase_status", lambda: self.tx.one_phase_status(status))

    @precondition(_alive)
    @rule(data=st.data())
    def acknowledged(self, data: st.DataObject) -> None:
        name = self._some_branch(data)
        if name in self.unacked and self.asking == name:
            # The only branch of a recovered one-phase commit took the phase 2 it was sent.
            committed = name in self.commit_sent
            self.one_phase_possible = frozenset({BranchStatus.COMMITTED if committed else BranchStatus.ABORTED})
        self.unacked.discard(name)
        self._event("acknowledged", lambda: self.tx.acknowledged(name))

    @precondition(_alive)
    @rule(reason=st.sampled_from(["client", "reaper"]))
    def abort(self, reason: str) -> None:
        if self._event("abort", lambda: self.tx.abort(reason)) and not self.commit_accepted:
            self.abort_accepted_before_commit = True

    @precondition(_alive)
    @rule(now=st.sampled_from([DEADLINE / 2, DEADLINE, DEADLINE * 2]))
    def expire(self, now: float) -> None:
        was_active = self.tx.state == "active"
        before = len(self.actions)
        self._event("expire", lambda: self.tx.expire(now))
        if len(self.actions) > before:
            assert was_active and now >= DEADLINE, "a transaction expired before its deadline or once committing"
            if not self.commit_accepted:
                self.abort_accepted_before_commit = True

    # -- crash and recovery -----------------------------------------------------

    @rule(data=st.data())
    def crash(self, data: st.DataObject) -> None:
        """The coordinator dies; a new one finds one of the records the log can hold."""
        if self.gone:
            return  # nothing on disk, nothing to find: the transaction is presumed aborted
        durable = [i for i, w in enumerate(self.writes) if w.status == "durable"]
        first = durable[-1] if durable else 0
        candidates: list[int | None] = [i for i in range(first, len(self.writes)) if self.writes[i].status != "failed"]
        if not durable:
            candidates.append(None)
        choice = data.draw(st.sampled_from(candidates))
        # Writes reach the disk in order: those after the one found never made it.
        for write in self.writes[(-1 if choice is None else choice) + 1 :]:
            write.status = "failed"
        if choice is None:
            assert not self.ever_commit_sent, "a commit was sent though nothing had been made durable"
            assert not self.one_phase_ever_sent, "a one-phase commit was sent before its record was durable"
            self.gone = True
            return
        self.writes[choice].status = "durable"  # the new coordinator read it from disk
        self._recover(self.writes[choice].record)

    def _recover(self, record: TransactionRecord) -> None:
        self.tx = Transaction.from_record(record)
        self._new_incarnation()
        self.enlisted = {b.name: (None, b.early) for b in record.branches}
        self.commit_accepted = record.commit_requested
        actions = self.tx.recover()
        if record.finished:
            assert actions == [], "a finished transaction was recovered"
            self.finished = Outcome(record.decision)
            self.decisions_seen = [self.finished]
            return
        if record.decision == Outcome.COMMITTED:
            named = tuple(b.name for b in record.branches if b.state in ("prepared", "committed"))
            assert actions == [SendCommit(named)], f"a logged decision recovered as {actions}"
            self.forced, self.force_result = named, "logged"
            self.early = set(named)
            self.commit_accepted = True
        elif record.one_phase:
            (branch,) = record.branches
            assert actions == [AskStatus(branch.name)], f"a one-phase record recovered as {actions}"
            self.asking = branch.name
            self.commit_accepted = True
        else:
            assert not self.ever_commit_sent, "a transaction whose commit was sent is recovered undecided"
            assert actions and actions[0] == Finish(Outcome.ABORTED), f"an undecided record recovered as {actions}"
            told = next((a.branches for a in actions if isinstance(a, NotifyAbort)), ())
            could_hold = {
                b.name
                for b in record.branches
                if b.state == "prepared" or (b.state == "enlisted" and record.state in ("preparing", "aborting"))
            }
            assert set(told) == could_hold, f"told {told} of the abort; the record says {could_hold} may hold work"
            assert set(told) <= self.ever_may_hold, f"told {told}, which never held work"
        self._apply("recovered", actions)

    # -- bookkeeping ------------------------------------------------------------

    def _event(self, event: str, call: Callable[[], list[Action]]) -> bool:
        """Feed one event; False when the machine refused it (which must change nothing)."""
        before = copy.deepcopy(self.tx)
        try:
            actions = call()
        except ProtocolError:
            assert self.tx == before, f"a refused {event} changed the transaction"
            return False
        self._apply(event, actions)
        return True

    def _resolve(self, kind: type[ForceDecision] | type[ForceRecord], status: str) -> None:
        """The log answered the forced write ``kind`` asked for."""
        self.writes[self.unconfirmed.pop(kind)].status = status

    def _may_hold_work(self) -> set[str]:
        """Branches that may hold prepared work: prepared early, or sent a prepare and
        either voted yes or has not answered."""
        unanswered_or_yes = {n for n in self.prepare_sent if self.first_vote.get(n) in (None, Vote.YES)}
        return (self.early & set(self.tx.branches)) | unanswered_or_yes

    def _write(self, record: TransactionRecord, status: str, kind: type[object] | None = None) -> None:
        if kind is not None:
            self.unconfirmed[kind] = len(self.writes)
        self.writes.append(Write(record, status))

    def _apply(self, event: str, actions: list[Action]) -> None:
        for action in actions:
            # Telling branches of a presumed abort is the one thing that follows the END.
            assert self.finished is None or isinstance(action, NotifyAbort), f"{action} after the transaction finished"
            match action:
                case SaveRecord():
                    self._write(self.tx.record(), "lazy")
                case ForceRecord():
                    assert event == "commit"
                    assert not self.record_forced, "one-phase record forced twice"
                    assert len(self.tx.branches) == 1 and not self.early, "one phase for a branch prepared early"
                    self.record_forced = True
                    record = self.tx.record()
                    assert record.one_phase and record.decision is None
                    self._write(record, "pending", ForceRecord)
                case SendPrepare(branches):
                    assert event == "commit"
                    assert not self.prepare_sent, "prepare sent twice"
                    assert set(branches) == set(self.tx.branches) - self.early, (
                        "prepare must go to every branch not prepared early, and only those"
                    )
                    self.prepare_sent.update(branches)
                    self.ever_may_hold.update(branches)
                case SendOnePhase(branch):
                    assert event == "record_logged", "one phase sent before its record was durable"
                    assert self.record_result == "logged"
                    assert list(self.tx.branches) == [branch], "one phase with more than one branch"
                    assert branch not in self.early, "one phase for a branch prepared early"
                    self.one_phase_sent = branch
                    self.one_phase_ever_sent = True
                    self.ever_may_hold.add(branch)
                    self.one_phase_possible = _ANY_STATUS
                case ForceDecision(branches):
                    assert self.forced is None, "decision forced twice"
                    assert Vote.NO not in self.first_vote.values(), "decision forced though a branch voted no"
                    assert not self.abort_sent, "decision forced after an abort was sent"
                    assert self.one_phase_sent is None and not self.record_forced, "decision forced in one phase"
                    yes = {n for n, v in self.first_vote.items() if v is Vote.YES}
                    assert set(branches) == yes | (self.early & set(self.tx.branches)), (
                        f"decision names {branches}, expected yes voters {yes} and early {self.early}"
                    )
                    assert all(n in self.first_vote or n in self.early for n in self.tx.branches), (
                        "decision forced before every vote was in"
                    )
                    record = self.tx.decision_record()
                    named = {b.name for b in record.branches if b.state == "prepared"}
                    assert record.decision == "committed" and named == set(branches), "the decision record is wrong"
                    self.forced = branches
                    self._write(record, "pending", ForceDecision)
                case SendCommit(branches):
                    assert not self.abort_sent, "commit sent after an abort was sent"
                    if event == "one_phase_status":
                        assert self.status_answer is BranchStatus.PREPARED, "a one-phase branch committed unprepared"
                        assert branches == (self.asking,)
                    else:
                        assert event in ("decision_logged", "recovered")
                        assert self.forced is not None, "commit sent without a forced decision"
                        assert self.force_result == "logged", "commit sent before the decision was durable"
                        assert set(branches) <= set(self.forced), "commit sent to a branch the decision omits"
                        for name in branches:
                            assert self.first_vote.get(name) in (None, Vote.YES), f"commit sent to {name}"
                    self.commit_sent.update(branches)
                    self.ever_commit_sent.update(branches)
                    self.unacked.update(branches)
                    if self.asking is not None:
                        self.one_phase_possible = frozenset(_COMMITTED_STATUSES)
                case SendAbort(branches):
                    assert not self.abort_sent, "abort sent twice"
                    assert not self.commit_sent, "abort sent after a commit was sent"
                    if event == "one_phase_status":
                        assert self.status_answer not in _COMMITTED_STATUSES, "a committed one-phase branch aborted"
                        assert branches == (self.asking,)
                    else:
                        assert set(branches) == self._may_hold_work(), (
                            f"abort sent to {branches}; may hold work: {self._may_hold_work()}"
                        )
                        assert self.forced is None or self.force_result == "failed", (
                            "abort sent after the decision was forced, though the log did not fail it"
                        )
                        for name in branches:
                            assert name in self.early or name in self.prepare_sent, (
                                f"abort sent to {name}, which cannot hold prepared work"
                            )
                            assert self.first_vote.get(name) in (None, Vote.YES), (
                                f"abort sent to {name}, which voted {self.first_vote.get(name)}"
                            )
                    self.abort_sent.update(branches)
                    self.ever_abort_sent.update(branches)
                    self.unacked.update(branches)
                case AskStatus(branch):
                    assert event == "recovered"
                case NotifyAbort(branches):
                    assert event == "recovered"
                    self.ever_abort_sent.update(branches)
                case Finish(outcome, durable):
                    assert self.tx.pending_branches() == (), "finished with branches pending"
                    assert not self.unacked, f"finished before {self.unacked} acknowledged"
                    assert outcome == self.tx.decision
                    assert durable == (self.asking is not None), "only a recovered one-phase END is forced"
                    if outcome is Outcome.COMMITTED:
                        assert not self.abort_sent
                        assert Vote.NO not in self.first_vote.values(), "committed though a branch voted no"
                        if self.asking is not None:
                            assert self.status_answer in _COMMITTED_STATUSES
                        elif self.forced is not None:
                            assert self.force_result == "logged"
                            assert self.commit_sent == set(self.forced), "a named branch never heard commit"
                        elif self.one_phase_sent is not None:
                            assert self.one_phase_answer is Outcome.COMMITTED
                        else:  # no decision record: nothing needed phase 2
                            assert all(v is Vote.READ_ONLY for v in self.first_vote.values())
                            assert not self.early & set(self.tx.branches)
                    else:
                        assert not self.commit_sent
                        if self.asking is not None:
                            assert self.status_answer not in _COMMITTED_STATUSES
                        elif event != "recovered":
                            assert self._may_hold_work() <= self.abort_sent, (
                                f"aborted without telling {self._may_hold_work() - self.abort_sent}"
                            )
                    needed_phase_two = self.forced is not None or self.asking is not None
                    if outcome is Outcome.ABORTED or needed_phase_two or self.one_phase_answer is not None:
                        assert self.settled in (None, outcome), f"settled {self.settled} once, then {outcome}"
                        self.settled = outcome
                    self.finished = outcome
                    self._write(self.tx.record(), "pending" if durable else "lazy")
                case _:
                    raise AssertionError(f"unknown action {action!r}")
            self.actions.append(action)

    # -- invariants -------------------------------------------------------------

    @invariant()
    def decision_never_changes(self) -> None:
        if self.tx.decision is not None:
            if self.decisions_seen:
                assert self.tx.decision == self.decisions_seen[0], (
                    f"decision went from {self.decisions_seen[0]} to {self.tx.decision}"
                )
            else:
                self.decisions_seen.append(self.tx.decision)
        else:
            assert not self.decisions_seen, "a decision was forgotten"

    @invariant()
    def final_iff_finished(self) -> None:
        if self.gone:
            return
        assert self.tx.state.final == (self.finished is not None)
        if self.finished is not None:
            assert self.tx.decision == self.finished

    @invariant()
    def actions_emitted_at_most_once(self) -> None:
        assert sum(isinstance(a, ForceDecision) for a in self.actions) <= 1
        assert sum(isinstance(a, ForceRecord) for a in self.actions) <= 1
        assert sum(isinstance(a, Finish) for a in self.actions) <= 1
        assert sum(isinstance(a, (SendPrepare, SendOnePhase)) for a in self.actions) <= 1

    @invariant()
    def pending_branches_are_those_sent_phase_two(self) -> None:
        if not self.gone:
            assert set(self.tx.pending_branches()) == self.unacked

    @invariant()
    def no_branch_hears_both_outcomes_across_restarts(self) -> None:
        assert not (self.ever_commit_sent and self.ever_abort_sent), (
            f"commit sent to {self.ever_commit_sent} and abort to {self.ever_abort_sent}"
        )

    @invariant()
    def branch_states_are_the_machines_own(self) -> None:
        assert all(isinstance(b.state, BranchState) for b in self.tx.branches.values())


TransactionMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_transaction_machine = TransactionMachine.TestCase
