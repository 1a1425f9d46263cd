"""Example tests for one transaction's state machine: one behaviour per test."""

from __future__ import annotations

import pytest

from coordinator.engine import (
    BranchState,
    Conflict,
    Finish,
    ForceDecision,
    ForceRecord,
    SaveRecord,
    SendAbort,
    SendCommit,
    SendOnePhase,
    SendPrepare,
    Transaction,
    TxState,
    WrongState,
)
from twopc_core.protocol import Outcome, Vote


def tx_with(*names: str, early: tuple[str, ...] = ()) -> Transaction:
    tx = Transaction(gtid="g1")
    for name in names:
        tx.enlist(name, payload={"to": name}, prepared=name in early)
    return tx


def one_phase_sent(name: str = "a") -> Transaction:
    """A single-branch transaction whose one-phase record is durable and commit sent."""
    tx = tx_with(name)
    tx.commit()
    tx.record_logged()
    return tx


def committing(*names: str) -> Transaction:
    """A transaction whose commit decision is durable and phase 2 is under way."""
    tx = tx_with(*names)
    tx.commit()
    for name in names:
        tx.vote(name, Vote.YES)
    tx.decision_logged()
    assert tx.state is TxState.COMMITTING
    return tx


# -- commit: which round starts ---------------------------------------------------


def test_single_branch_commit_first_forces_its_record() -> None:
    tx = tx_with("a")
    assert tx.commit() == [ForceRecord()]
    assert tx.one_phase
    assert tx.state is TxState.PREPARING


def test_single_branch_commits_in_one_phase_once_its_record_is_durable() -> None:
    tx = tx_with("a")
    tx.commit()
    assert tx.record_logged() == [SendOnePhase("a")]
    assert tx.record_logged() == []


def test_a_one_phase_record_that_could_not_be_logged_aborts_without_sending() -> None:
    tx = tx_with("a")
    tx.commit()
    assert tx.record_failed("disk full") == [Finish(Outcome.ABORTED)]
    assert tx.state is TxState.ABORTED
    assert "disk full" in (tx.reason or "")
    assert tx.record_logged() == []


def test_a_one_phase_answer_before_the_record_is_durable_is_ignored() -> None:
    tx = tx_with("a")
    tx.commit()
    assert tx.one_phase_result(Outcome.COMMITTED) == []
    assert tx.state is TxState.PREPARING


def test_one_phase_result_committed_finishes_without_decision_record() -> None:
    tx = one_phase_sent()
    assert tx.one_phase_result(Outcome.COMMITTED) == [Finish(Outcome.COMMITTED)]
    assert tx.state is TxState.COMMITTED
    assert tx.branches["a"].state is BranchState.COMMITTED


def test_one_phase_result_aborted_finishes_aborted_with_reason() -> None:
    tx = one_phase_sent()
    assert tx.one_phase_result(Outcome.ABORTED, "disk full") == [Finish(Outcome.ABORTED)]
    assert tx.state is TxState.ABORTED
    assert tx.decision is Outcome.ABORTED
    assert "disk full" in (tx.reason or "")


def test_one_phase_without_answer_changes_nothing() -> None:
    tx = one_phase_sent()
    assert tx.one_phase_result(None) == []
    assert tx.state is TxState.PREPARING
    assert tx.undecided


def test_abort_is_refused_during_one_phase_commit() -> None:
    tx = tx_with("a")
    tx.commit()
    with pytest.raises(WrongState):
        tx.abort("reaper")
    assert tx.state is TxState.PREPARING


def test_votes_are_ignored_during_one_phase_commit() -> None:
    tx = tx_with("a")
    tx.commit()
    assert tx.vote("a", Vote.NO) == []
    assert tx.state is TxState.PREPARING


def test_two_branches_are_both_sent_prepare() -> None:
    tx = tx_with("a", "b")
    assert tx.commit() == [SaveRecord(), SendPrepare(("a", "b"))]
    assert not tx.one_phase
    assert tx.state is TxState.PREPARING


def test_commit_without_branches_finishes_committed() -> None:
    tx = Transaction(gtid="g1")
    assert tx.commit() == [Finish(Outcome.COMMITTED)]
    assert tx.state is TxState.COMMITTED


def test_early_prepared_branches_are_not_sent_prepare() -> None:
    tx = tx_with("a", "b", "c", early=("b",))
    assert tx.commit() == [SaveRecord(), SendPrepare(("a", "c"))]


def test_single_early_prepared_branch_is_decided_without_prepare_or_one_phase() -> None:
    tx = tx_with("a", early=("a",))
    assert tx.commit() == [SaveRecord(), ForceDecision(("a",))]
    assert not tx.one_phase


def test_all_early_prepared_forces_decision_at_once() -> None:
    tx = tx_with("a", "b", early=("a", "b"))
    assert tx.commit() == [SaveRecord(), ForceDecision(("a", "b"))]
    assert tx.deciding


def test_one_enlisted_and_one_early_branch_is_two_phase() -> None:
    tx = tx_with("a", "b", early=("a",))
    assert tx.commit() == [SaveRecord(), SendPrepare(("b",))]
    assert not tx.one_phase


# -- votes ------------------------------------------------------------------------


def test_decision_is_forced_only_when_the_last_vote_arrives() -> None:
    tx = tx_with("a", "b")
    tx.commit()
    assert tx.vote("a", Vote.YES) == []
    assert not tx.deciding
    assert tx.vote("b", Vote.YES) == [ForceDecision(("a", "b"))]
    assert tx.deciding
    assert tx.undecided


def test_no_vote_aborts_at_once_and_sends_abort_to_branches_that_may_hold_work() -> None:
    tx = tx_with("a", "b", "c", "d")
    tx.commit()
    tx.vote("a", Vote.YES)  # prepared: holds work
    tx.vote("d", Vote.READ_ONLY)  # nothing to undo
    # c has not answered: its prepare may have been applied, so it may hold work.
    assert tx.vote("b", Vote.NO, "constraint") == [SaveRecord(), SendAbort(("a", "c"))]
    assert tx.state is TxState.ABORTING
    assert tx.decision is Outcome.ABORTED
    assert tx.branches["b"].state is BranchState.ABORTED
    assert tx.branches["b"].reason == "constraint"
    assert "constraint" in (tx.reason or "")


def test_no_vote_from_the_only_other_voter_finishes_aborted() -> None:
    tx = tx_with("a", "b")
    tx.commit()
    tx.vote("a", Vote.READ_ONLY)
    assert tx.vote("b", Vote.NO) == [Finish(Outcome.ABORTED)]
    assert tx.state is TxState.ABORTED


def test_all_read_only_commits_without_force_decision() -> None:
    tx = tx_with("a", "b")
    tx.commit()
    assert tx.vote("a", Vote.READ_ONLY) == []
    actions = tx.vote("b", Vote.READ_ONLY)
    assert actions == [Finish(Outcome.COMMITTED)]
    assert not any(isinstance(a, ForceDecision) for a in actions)
    assert tx.state is TxState.COMMITTED


def test_read_only_branch_is_left_out_of_the_decision() -> None:
    tx = tx_with("a", "b")
    tx.commit()
    tx.vote("a", Vote.READ_ONLY)
    assert tx.vote("b", Vote.YES) == [ForceDecision(("b",))]


def test_repeated_vote_is_ignored() -> None:
    tx = tx_with("a", "b")
    tx.commit()
    tx.vote("a", Vote.YES)
    assert tx.vote("a", Vote.NO) == []
    assert tx.branches["a"].state is BranchState.PREPARED
    assert tx.state is TxState.PREPARING


def test_late_vote_after_abort_is_ignored() -> None:
    tx = tx_with("a", "b")
    tx.commit()
    tx.vote("a", Vote.NO)
    assert tx.vote("b", Vote.YES) == []
    assert tx.state is TxState.ABORTING
    assert tx.pending_branches() == ("b",)


def test_late_vote_after_decision_is_ignored() -> None:
    tx = committing("a", "b")
    assert tx.vote("a", Vote.NO) == []
    assert tx.decision is Outcome.COMMITTED


def test_vote_for_unknown_branch_is_ignored() -> None:
    tx = tx_with("a", "b")
    tx.commit()
    assert tx.vote("zz", Vote.NO) == []
    assert tx.state is TxState.PREPARING


def test_vote_before_commit_is_ignored() -> None:
    tx = tx_with("a", "b")
    assert tx.vote("a", Vote.NO) == []
    assert tx.state is TxState.ACTIVE
    assert tx.branches["a"].state is BranchState.ENLISTED


# -- decision and phase 2 ---------------------------------------------------------


def test_decision_logged_sends_commit_only_to_prepared_branches() -> None:
    tx = tx_with("a", "b", "c", early=("c",))
    tx.commit()
    tx.vote("a", Vote.READ_ONLY)
    tx.vote("b", Vote.YES)
    assert tx.decision_logged() == [SendCommit(("b", "c"))]
    assert tx.state is TxState.COMMITTING
    assert tx.decision is Outcome.COMMITTED


def test_decision_logged_without_a_pending_decision_is_ignored() -> None:
    tx = tx_with("a", "b")
    tx.commit()
    assert tx.decision_logged() == []
    assert tx.state is TxState.PREPARING


def test_acks_finish_the_commit() -> None:
    tx = committing("a", "b")
    assert tx.acknowledged("a") == []
    assert tx.pending_branches() == ("b",)
    assert tx.acknowledged("b") == [Finish(Outcome.COMMITTED)]
    assert tx.state is TxState.COMMITTED
    assert tx.pending_branches() == ()


def test_repeated_ack_is_ignored() -> None:
    tx = committing("a", "b")
    tx.acknowledged("a")
    assert tx.acknowledged("a") == []
    assert tx.state is TxState.COMMITTING


def test_acks_finish_the_abort() -> None:
    tx = tx_with("a", "b", "c")
    tx.commit()
    tx.vote("a", Vote.YES)
    tx.vote("c", Vote.NO)
    assert tx.pending_branches() == ("a", "b")
    assert tx.acknowledged("a") == []
    assert tx.acknowledged("b") == [Finish(Outcome.ABORTED)]
    assert tx.state is TxState.ABORTED


def test_decision_failed_aborts_and_sends_abort_to_prepared_branches() -> None:
    tx = tx_with("a", "b")
    tx.commit()
    tx.vote("a", Vote.YES)
    tx.vote("b", Vote.YES)
    assert tx.decision_failed("disk I/O error") == [SaveRecord(), SendAbort(("a", "b"))]
    assert tx.state is TxState.ABORTING
    assert tx.decision is Outcome.ABORTED
    assert not tx.deciding
    assert "disk I/O error" in (tx.reason or "")
    # The log's late success can no longer turn it into a commit.
    assert tx.decision_logged() == []
    assert tx.decision is Outcome.ABORTED


def test_decision_failed_without_a_pending_decision_is_ignored() -> None:
    tx = committing("a", "b")
    assert tx.decision_failed("late") == []
    assert tx.decision is Outcome.COMMITTED


# -- abort ------------------------------------------------------------------------


def test_abort_while_active_without_prepared_branches_finishes_at_once() -> None:
    tx = tx_with("a", "b")
    assert tx.abort("client") == [Finish(Outcome.ABORTED)]
    assert tx.state is TxState.ABORTED
    assert all(b.state is BranchState.ABORTED for b in tx.branches.values())


def test_abort_while_active_sends_abort_to_early_prepared_branches() -> None:
    tx = tx_with("a", "b", early=("b",))
    assert tx.abort("client") == [SaveRecord(), SendAbort(("b",))]
    assert tx.state is TxState.ABORTING
    assert tx.branches["a"].state is BranchState.ABORTED


def test_abort_is_refused_while_the_decision_is_being_forced() -> None:
    tx = tx_with("a", "b")
    tx.commit()
    tx.vote("a", Vote.YES)
    tx.vote("b", Vote.YES)
    with pytest.raises(WrongState):
        tx.abort("client")
    assert tx.deciding
    assert tx.undecided


def test_abort_is_refused_after_commit_decision() -> None:
    tx = committing("a", "b")
    with pytest.raises(WrongState):
        tx.abort("client")
    assert tx.decision is Outcome.COMMITTED


def test_abort_is_refused_after_committed() -> None:
    tx = committing("a", "b")
    tx.acknowledged("a")
    tx.acknowledged("b")
    with pytest.raises(WrongState):
        tx.abort("client")
    assert tx.state is TxState.COMMITTED


def test_repeated_abort_answers_nothing() -> None:
    tx = tx_with("a", early=("a",))
    tx.abort("client")
    assert tx.abort("client") == []
    assert tx.state is TxState.ABORTING


def test_first_abort_reason_is_kept() -> None:
    tx = tx_with("a", early=("a",))
    tx.abort("first")
    tx.abort("second")
    assert tx.reason == "first"


def test_commit_after_client_abort_is_wrong_state() -> None:
    tx = tx_with("a", "b")
    tx.abort("client")
    with pytest.raises(WrongState):
        tx.commit()


def test_commit_after_client_abort_with_abort_round_pending_is_wrong_state() -> None:
    tx = tx_with("a", early=("a",))
    tx.abort("client")
    with pytest.raises(WrongState):
        tx.commit()


def test_repeated_commit_after_commit_round_abort_answers_nothing() -> None:
    tx = tx_with("a", "b")
    tx.commit()
    tx.vote("a", Vote.NO)
    assert tx.commit() == []
    assert tx.decision is Outcome.ABORTED


def test_repeated_commit_while_preparing_answers_nothing() -> None:
    tx = tx_with("a", "b")
    tx.commit()
    assert tx.commit() == []
    assert tx.state is TxState.PREPARING


# -- enlist -----------------------------------------------------------------------


def test_enlist_is_idempotent_per_name() -> None:
    tx = Transaction(gtid="g1")
    assert tx.enlist("a", {"x": 1}) == [SaveRecord()]
    assert tx.enlist("a", {"x": 1}) == []
    assert list(tx.branches) == ["a"]


def test_enlist_with_a_different_payload_conflicts() -> None:
    tx = Transaction(gtid="g1")
    tx.enlist("a", {"x": 1})
    with pytest.raises(Conflict):
        tx.enlist("a", {"x": 2})
    assert tx.branches["a"].payload == {"x": 1}


def test_enlist_with_a_different_prepared_flag_conflicts() -> None:
    tx = Transaction(gtid="g1")
    tx.enlist("a")
    with pytest.raises(Conflict):
        tx.enlist("a", prepared=True)
    assert not tx.branches["a"].early


def test_enlist_prepared_marks_the_branch_prepared() -> None:
    tx = Transaction(gtid="g1")
    tx.enlist("a", prepared=True)
    assert tx.branches["a"].state is BranchState.PREPARED
    assert tx.branches["a"].early


def test_enlist_is_refused_once_not_active() -> None:
    tx = tx_with("a", "b")
    tx.commit()
    with pytest.raises(WrongState):
        tx.enlist("c")
    assert "c" not in tx.branches


def test_enlist_is_refused_after_abort() -> None:
    tx = tx_with("a")
    tx.abort("client")
    with pytest.raises(WrongState):
        tx.enlist("c")


def test_repeated_enlist_after_commit_is_still_idempotent() -> None:
    tx = tx_with("a", "b")
    tx.commit()
    assert tx.enlist("a", {"to": "a"}) == []


# -- deadline ---------------------------------------------------------------------


def test_an_active_transaction_past_its_deadline_expires_into_an_abort() -> None:
    tx = Transaction(gtid="g1", deadline=100.0)
    tx.enlist("a", prepared=True)
    assert tx.expire(99.9) == []
    assert tx.expire(100.0) == [SaveRecord(), SendAbort(("a",))]
    assert tx.reason == "deadline exceeded"


def test_a_transaction_being_committed_does_not_expire() -> None:
    tx = Transaction(gtid="g1", deadline=100.0)
    tx.enlist("a")
    tx.enlist("b")
    tx.commit()
    assert not tx.expired(500.0)
    assert tx.expire(500.0) == []
    assert tx.state is TxState.PREPARING


def test_a_prepare_may_take_only_what_is_left_of_the_deadline() -> None:
    tx = Transaction(gtid="g1", deadline=100.0)
    assert tx.prepare_timeout(now=90.0, limit=30.0) == 10.0
    assert tx.prepare_timeout(now=50.0, limit=30.0) == 30.0
    assert 0 < tx.prepare_timeout(now=120.0, limit=30.0) < 0.01


def test_each_one_phase_attempt_gets_some_time_even_past_the_deadline() -> None:
    tx = Transaction(gtid="g1", deadline=100.0)
    assert tx.one_phase_timeout(now=120.0, limit=30.0) >= 0.05


# -- records ----------------------------------------------------------------------


def test_the_decision_record_names_the_prepared_branches_as_committing() -> None:
    tx = tx_with("a", "b", "c")
    tx.commit()
    tx.vote("a", Vote.YES)
    tx.vote("b", Vote.READ_ONLY)
    tx.vote("c", Vote.YES)
    record = tx.decision_record()
    assert (record.state, record.decision, record.finished) == ("committing", "committed", False)
    assert {b.name: b.state for b in record.branches} == {"a": "prepared", "b": "read_only", "c": "prepared"}
    assert tx.record().decision is None  # in memory it is undecided until the log says so


def test_the_record_of_a_finished_transaction_says_it_may_be_forgotten() -> None:
    tx = committing("a", "b")
    tx.acknowledged("a")
    tx.acknowledged("b")
    record = tx.record()
    assert (record.state, record.decision, record.finished) == ("committed", "committed", True)


# -- requests about a transaction known only from its record ---------------------


def finished_record(*events: str) -> Transaction:
    """A transaction rebuilt from the record a finished one left in the log."""
    tx = tx_with("a", "b")
    if "commit" in events:
        tx.commit()
    if "no" in events:
        tx.vote("a", Vote.NO)
        tx.acknowledged("b")
    elif "commit" in events:
        tx.vote("a", Vote.YES)
        tx.vote("b", Vote.YES)
        tx.decision_logged()
        tx.acknowledged("a")
        tx.acknowledged("b")
    else:
        tx.abort("client")
    assert tx.state.final
    return Transaction.from_record(tx.record())


def test_a_repeated_commit_of_a_finished_commit_answers_nothing_new() -> None:
    assert finished_record("commit").commit() == []


def test_a_repeated_commit_of_a_commit_that_aborted_answers_nothing_new() -> None:
    assert finished_record("commit", "no").commit() == []


def test_a_commit_of_a_transaction_the_client_aborted_is_wrong_state() -> None:
    with pytest.raises(WrongState):
        finished_record().commit()


def test_an_abort_of_a_finished_commit_is_wrong_state() -> None:
    with pytest.raises(WrongState):
        finished_record("commit").abort("client")


def test_an_abort_of_a_finished_abort_answers_nothing_new() -> None:
    assert finished_record("commit", "no").abort("client") == []


def test_enlisting_in_a_finished_transaction_is_wrong_state_even_under_a_known_name() -> None:
    with pytest.raises(WrongState):
        finished_record("commit").enlist("a")


# -- operators --------------------------------------------------------------------------


def _committing(*names: str) -> Transaction:
    tx = Transaction("g1", deadline=100.0)
    for name in names:
        tx.enlist(name)
    tx.commit()
    for name in names:
        tx.vote(name, Vote.YES)
    tx.decision_logged()
    return tx


def test_abandoning_the_last_pending_branch_finishes_the_transaction_with_its_decision() -> None:
    tx = _committing("a", "b")
    tx.acknowledged("a")
    actions = tx.abandon("b", "ops", 5.0, "gone")
    assert actions == [Finish(Outcome.COMMITTED)]
    assert tx.state is TxState.COMMITTED and tx.branches["b"].state is BranchState.ABANDONED
    assert (tx.branches["b"].resolved_by, tx.branches["b"].resolved_at) == ("ops", 5.0)


def test_abandoning_one_of_two_pending_branches_keeps_phase_two_to_the_other() -> None:
    tx = _committing("a", "b")
    assert tx.abandon("b", "ops", 5.0, "gone") == [SaveRecord()]
    assert tx.pending_branches() == ("a",)


def test_abandoning_while_votes_are_out_is_refused() -> None:
    tx = Transaction("g1", deadline=100.0)
    tx.enlist("a")
    tx.enlist("b")
    tx.commit()
    with pytest.raises(WrongState):
        tx.abandon("a", "ops", 5.0, "gone")


def test_an_acknowledgement_of_a_forced_other_outcome_is_heuristic_damage() -> None:
    tx = _committing("a", "b")
    tx.acknowledged("a")
    actions = tx.acknowledged("b", Outcome.ABORTED)
    assert actions == [Finish(Outcome.COMMITTED)]
    assert tx.heuristic and tx.branches["b"].heuristic is Outcome.ABORTED
    assert tx.branches["b"].state is BranchState.ABORTED
