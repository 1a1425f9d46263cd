"""Random event sequences against one transaction's state machine.

The test keeps its own record of what the driver told the machine and what the
machine asked for, and checks the protocol's rules against that record after
every step, without looking at how the machine reaches its answers.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from coordinator.engine._machine import (
    Action,
    Conflict,
    Finish,
    ForceDecision,
    ProtocolError,
    SendAbort,
    SendCommit,
    SendOnePhase,
    SendPrepare,
    Transaction,
    WrongState,
)
from twopc_core.protocol import Outcome, Vote

NAMES = ("a", "b", "c", "d")
names = st.sampled_from(NAMES)
payloads = st.sampled_from([None, {"n": 1}, {"n": 2}])


class TransactionMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tx = Transaction(gtid="g")
        self.actions: list[Action] = []
        #: Branches enlisted already prepared (as far as the driver knows).
        self.early: set[str] = set()
        #: Branches that were sent a prepare, and the first vote each gave after it.
        self.prepare_sent: set[str] = set()
        self.first_vote: dict[str, Vote] = {}
        self.forced: tuple[str, ...] | None = None
        #: What the log said first after the decision was forced: "logged" or "failed".
        self.force_result: str | None = None
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

    # -- start ------------------------------------------------------------------

    @initialize(
        recovered=st.sampled_from([False, False, False, True]),
        branches=st.lists(st.tuples(names, st.booleans(), payloads), unique_by=lambda b: b[0], min_size=1, max_size=4),
        commit_at_once=st.booleans(),
    )
    def start(self, recovered: bool, branches: list[tuple[str, bool, object]], commit_at_once: bool) -> None:
        """Begin with some branches enlisted, and often with commit already asked for,
        so that short runs reach the prepare and commit rounds too."""
        if recovered:
            self.tx, actions = Transaction.recovered_commit("g", [name for name, _, _ in branches])
            self.forced = tuple(name for name, _, _ in branches)
            self.force_result = "logged"
            self.early = set(self.forced)
            self.commit_accepted = True
            # The log keeps no payloads: recovered branches look enlisted without one.
            self.enlisted = {name: (None, False) for name in self.forced}
            self._apply("recovered", actions)
            return
        for name, prepared, payload in branches:
            self.enlist(name, prepared, payload)
        if commit_at_once:
            self.commit()

    def _some_branch(self, data: st.DataObject) -> str:
        """Mostly a branch of this transaction, sometimes a stranger."""
        if self.tx.branches and data.draw(st.integers(0, 4)):
            return data.draw(st.sampled_from(sorted(self.tx.branches)))
        return data.draw(names)

    # -- events -----------------------------------------------------------------

    @rule(name=names, prepared=st.booleans(), payload=payloads)
    def enlist(self, name: str, prepared: bool, payload: object) -> None:
        before = copy.deepcopy(self.tx)
        try:
            added = self.tx.enlist(name, payload=payload, prepared=prepared)
        except Conflict:
            assert name in self.enlisted and self.enlisted[name] != (payload, prepared)
            assert self.tx == before, "a refused enlist changed the transaction"
            return
        except WrongState:
            assert name not in self.enlisted, "a repeated enlist must answer as the first did"
            assert before.state != "active", "enlist refused while active"
            assert self.tx == before, "a refused enlist changed the transaction"
            return
        if added:
            assert name not in self.enlisted, "the same name enlisted twice"
            assert before.state == "active", "enlisted into a transaction that is not active"
            self.enlisted[name] = (payload, prepared)
            if prepared:
                self.early.add(name)
        else:
            assert self.enlisted.get(name) == (payload, prepared), "wrongly answered 'already enlisted'"
            assert self.tx == before, "a repeated enlist changed the transaction"

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

    @rule(data=st.data(), vote=st.sampled_from(Vote), reason=st.sampled_from([None, "full"]))
    def vote(self, data: st.DataObject, vote: Vote, reason: str | None) -> None:
        name = self._some_branch(data)
        if name in self.prepare_sent and name not in self.first_vote:
            self.first_vote[name] = vote
        self._event("vote", lambda: self.tx.vote(name, vote, reason))

    @rule()
    def decision_logged(self) -> None:
        if self.forced is not None and self.force_result is None:
            self.force_result = "logged"
        self._event("decision_logged", self.tx.decision_logged)

    @rule(reason=st.just("disk I/O error"))
    def decision_failed(self, reason: str) -> None:
        if self.forced is not None and self.force_result is None:
            self.force_result = "failed"
        self._event("decision_failed", lambda: self.tx.decision_failed(reason))

    @rule(outcome=st.sampled_from([None, Outcome.COMMITTED, Outcome.ABORTED]))
    def one_phase_result(self, outcome: Outcome | None) -> None:
        if self.one_phase_sent is not None and self.one_phase_answer is None:
            self.one_phase_answer = outcome
        self._event("one_phase_result", lambda: self.tx.one_phase_result(outcome, "no"))

    @rule(data=st.data())
    def acknowledged(self, data: st.DataObject) -> None:
        name = self._some_branch(data)
        self.unacked.discard(name)
        self._event("acknowledged", lambda: self.tx.acknowledged(name))

    @rule(reason=st.sampled_from(["client", "reaper"]))
    def abort(self, reason: str) -> None:
        if self._event("abort", lambda: self.tx.abort(reason)) and not self.commit_accepted:
            self.abort_accepted_before_commit = True

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

    def _may_hold_work(self) -> set[str]:
        """Branches that may hold prepared work: prepared early, or sent a prepare and
        either voted yes or has not answered."""
        unanswered_or_yes = {n for n in self.prepare_sent if self.first_vote.get(n) in (None, Vote.YES)}
        return (self.early & set(self.tx.branches)) | unanswered_or_yes

    def _apply(self, event: str, actions: list[Action]) -> None:
        for action in actions:
            assert self.finished is None, f"{action} after the transaction finished"
            match action:
                case SendPrepare(branches):
                    assert event == "commit"
                    assert not self.prepare_sent, "prepare sent twice"
                    assert set(branches) == set(self.tx.branches) - self.early, (
                        "prepare must go to every branch not prepared early, and only those"
                    )
                    self.prepare_sent.update(branches)
                case SendOnePhase(branch):
                    assert event == "commit"
                    assert list(self.tx.branches) == [branch], "one phase with more than one branch"
                    assert branch not in self.early, "one phase for a branch prepared early"
                    self.one_phase_sent = branch
                case ForceDecision(branches):
                    assert self.forced is None, "decision forced twice"
                    assert Vote.NO not in self.first_vote.values(), "decision forced though a branch voted no"
                    assert not self.abort_sent, "decision forced after an abort was sent"
                    assert self.one_phase_sent is None, "decision forced in a one-phase commit"
                    yes = {n for n, v in self.first_vote.items() if v is Vote.YES}
                    assert set(branches) == yes | (self.early & set(self.tx.branches)), (
                        f"decision names {branches}, expected yes voters {yes} and early {self.early}"
                    )
                    assert all(n in self.first_vote or n in self.early for n in self.tx.branches), (
                        "decision forced before every vote was in"
                    )
                    self.forced = branches
                case SendCommit(branches):
                    assert event in ("decision_logged", "recovered")
                    assert self.forced is not None, "commit sent without a forced decision"
                    assert self.force_result == "logged", "commit sent before the decision was durable"
                    assert not self.abort_sent, "commit sent after an abort was sent"
                    assert set(branches) <= set(self.forced), "commit sent to a branch the decision omits"
                    for name in branches:
                        assert self.first_vote.get(name) in (None, Vote.YES), f"commit sent to {name}"
                    self.commit_sent.update(branches)
                    self.unacked.update(branches)
                case SendAbort(branches):
                    assert not self.abort_sent, "abort sent twice"
                    assert set(branches) == self._may_hold_work(), (
                        f"abort sent to {branches}; may hold work: {self._may_hold_work()}"
                    )
                    assert not self.commit_sent, "abort sent after a commit was sent"
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
                    self.unacked.update(branches)
                case Finish(outcome):
                    assert self.tx.pending_branches() == (), "finished with branches pending"
                    assert not self.unacked, f"finished before {self.unacked} acknowledged"
                    assert outcome == self.tx.decision
                    if outcome is Outcome.COMMITTED:
                        assert not self.abort_sent
                        assert Vote.NO not in self.first_vote.values(), "committed though a branch voted no"
                        if self.forced is not None:
                            assert self.force_result == "logged"
                            assert self.commit_sent == set(self.forced), "a named branch never heard commit"
                        elif self.one_phase_sent is not None:
                            assert self.one_phase_answer is Outcome.COMMITTED
                        else:  # no decision record: nothing needed phase 2
                            assert all(v is Vote.READ_ONLY for v in self.first_vote.values())
                            assert not self.early & set(self.tx.branches)
                    else:
                        assert not self.commit_sent
                        assert self._may_hold_work() <= self.abort_sent, (
                            f"aborted without telling {self._may_hold_work() - self.abort_sent}"
                        )
                    self.finished = outcome
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
        assert self.tx.state.final == (self.finished is not None)
        if self.finished is not None:
            assert self.tx.decision == self.finished

    @invariant()
    def actions_emitted_at_most_once(self) -> None:
        assert sum(isinstance(a, ForceDecision) for a in self.actions) <= 1
        assert sum(isinstance(a, Finish) for a in self.actions) <= 1
        assert sum(isinstance(a, (SendPrepare, SendOnePhase)) for a in self.actions) <= 1

    @invariant()
    def pending_branches_are_those_sent_phase_two(self) -> None:
        assert set(self.tx.pending_branches()) == self.unacked


TransactionMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_transaction_machine = TransactionMachine.TestCase
