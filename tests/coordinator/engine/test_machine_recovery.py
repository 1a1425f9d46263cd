"""What a logged record means after a restart: one behaviour per record the log can hold."""

from __future__ import annotations

import pytest

from coordinator.engine import (
    AskStatus,
    BranchState,
    Finish,
    NotifyAbort,
    SendAbort,
    SendCommit,
    Transaction,
    TxState,
    WrongState,
)
from coordinator.records import BranchRecord, TransactionRecord
from twopc_core.protocol import BranchStatus, Outcome


def record(
    state: str,
    decision: str | None = None,
    *branches: tuple[str, str],
    one_phase: bool = False,
    commit_requested: bool = False,
    finished: bool = False,
) -> TransactionRecord:
    return TransactionRecord(
        gtid="g1",
        state=state,
        decision=decision,
        created_at=1.0,
        updated_at=2.0,
        deadline=30.0,
        branches=tuple(BranchRecord(name, branch_state) for name, branch_state in branches),
        one_phase=one_phase,
        commit_requested=commit_requested,
        finished=finished,
    )


def recovered(rec: TransactionRecord) -> tuple[Transaction, list[object]]:
    tx = Transaction.from_record(rec)
    return tx, list(tx.recover())


# -- a COMMIT decision ------------------------------------------------------------


def test_a_commit_decision_resends_commit_to_every_branch_it_names() -> None:
    tx, actions = recovered(record("committing", "committed", ("a", "prepared"), ("b", "prepared")))
    assert actions == [SendCommit(("a", "b"))]
    assert tx.state is TxState.COMMITTING and tx.decision is Outcome.COMMITTED


def test_a_commit_decision_leaves_read_only_branches_out_of_phase_two() -> None:
    _, actions = recovered(record("committing", "committed", ("a", "prepared"), ("b", "read_only")))
    assert actions == [SendCommit(("a",))]


def test_a_commit_decision_does_not_rely_on_an_acknowledgement_logged_before_the_restart() -> None:
    _, actions = recovered(record("committing", "committed", ("a", "committed"), ("b", "prepared")))
    assert actions == [SendCommit(("a", "b"))]


def test_a_recovered_commit_finishes_when_every_branch_acknowledged() -> None:
    tx, _ = recovered(record("committing", "committed", ("a", "prepared"), ("b", "prepared")))
    assert tx.acknowledged("a") == []
    assert tx.acknowledged("b") == [Finish(Outcome.COMMITTED)]


def test_a_recovered_commit_refuses_an_abort() -> None:
    tx, _ = recovered(record("committing", "committed", ("a", "prepared")))
    with pytest.raises(WrongState):
        tx.abort("client")


def test_a_recovered_commit_is_answered_as_asked_for() -> None:
    tx, _ = recovered(record("committing", "committed", ("a", "prepared")))
    assert tx.commit_requested and tx.commit() == []


# -- no decision: presumed abort --------------------------------------------------


def test_an_undecided_transaction_is_aborted_and_its_prepared_branches_told_once() -> None:
    tx, actions = recovered(record("preparing", None, ("a", "prepared"), ("b", "read_only")))
    assert actions == [Finish(Outcome.ABORTED), NotifyAbort(("a",))]
    assert tx.state is TxState.ABORTED
    assert tx.reason == "coordinator restarted before a decision"


def test_branches_sent_a_prepare_that_never_voted_are_told_of_the_abort() -> None:
    _, actions = recovered(record("preparing", None, ("a", "enlisted"), ("b", "prepared")))
    assert actions == [Finish(Outcome.ABORTED), NotifyAbort(("a", "b"))]


def test_branches_of_an_active_transaction_were_never_sent_a_prepare() -> None:
    _, actions = recovered(record("active", None, ("a", "enlisted"), ("b", "prepared")))
    assert actions == [Finish(Outcome.ABORTED), NotifyAbort(("b",))]


def test_an_undecided_transaction_with_nothing_prepared_just_finishes_aborted() -> None:
    _, actions = recovered(record("active", None, ("a", "enlisted")))
    assert actions == [Finish(Outcome.ABORTED)]


def test_an_abort_under_way_is_finished_and_its_branches_told_again() -> None:
    _, actions = recovered(record("aborting", "aborted", ("a", "prepared"), ("b", "aborted")))
    assert actions == [Finish(Outcome.ABORTED), NotifyAbort(("a",))]


def test_the_aborted_record_marks_every_branch_but_a_read_only_one_aborted() -> None:
    tx, _ = recovered(record("preparing", None, ("a", "prepared"), ("b", "read_only"), ("c", "enlisted")))
    assert {b.name: b.state for b in tx.record().branches} == {
        "a": "aborted",
        "b": "read_only",
        "c": "aborted",
    }
    assert tx.record().finished


def test_the_presumed_abort_end_record_is_written_lazily() -> None:
    _, actions = recovered(record("preparing", None, ("a", "prepared")))
    assert Finish(Outcome.ABORTED, durable=False) in actions


# -- a one-phase commit -----------------------------------------------------------


def one_phase() -> Transaction:
    tx, actions = recovered(record("preparing", None, ("a", "enlisted"), one_phase=True, commit_requested=True))
    assert actions == [AskStatus("a")]
    return tx


def test_a_one_phase_commit_asks_its_only_branch() -> None:
    tx = one_phase()
    assert tx.undecided and tx.state is TxState.PREPARING


def test_a_one_phase_branch_that_committed_finishes_committed_with_a_forced_end() -> None:
    tx = one_phase()
    assert tx.one_phase_status(BranchStatus.COMMITTED) == [Finish(Outcome.COMMITTED, durable=True)]
    assert tx.branches["a"].state is BranchState.COMMITTED


def test_a_one_phase_branch_left_prepared_is_committed() -> None:
    tx = one_phase()
    assert tx.one_phase_status(BranchStatus.PREPARED) == [SendCommit(("a",))]
    assert tx.acknowledged("a") == [Finish(Outcome.COMMITTED, durable=True)]


@pytest.mark.parametrize("status", [BranchStatus.UNKNOWN, BranchStatus.ABORTED])
def test_a_one_phase_branch_that_did_not_commit_is_aborted_which_fences_a_late_commit(status: BranchStatus) -> None:
    tx = one_phase()
    assert tx.one_phase_status(status) == [SendAbort(("a",))]
    assert tx.decision is Outcome.ABORTED
    assert tx.acknowledged("a") == [Finish(Outcome.ABORTED, durable=True)]


def test_a_recovered_one_phase_commit_cannot_be_aborted_by_a_client_meanwhile() -> None:
    tx = one_phase()
    with pytest.raises(WrongState):
        tx.abort("client")


def test_a_status_answer_is_ignored_outside_a_recovered_one_phase_commit() -> None:
    tx = Transaction(gtid="g1")
    tx.enlist("a")
    tx.commit()
    tx.record_logged()
    assert tx.one_phase_status(BranchStatus.COMMITTED) == []


# -- a finished record ------------------------------------------------------------


def test_a_finished_record_needs_nothing() -> None:
    _, actions = recovered(record("committed", "committed", ("a", "committed"), finished=True))
    assert actions == []


# -- what operators settled ------------------------------------------------------------


def test_an_abandoned_branch_hears_no_phase_two_after_a_restart() -> None:
    tx, actions = recovered(record("committing", "committed", ("a", "prepared"), ("b", "abandoned")))
    assert actions == [SendCommit(("a",))]
    assert tx.branches["b"].state is BranchState.ABANDONED


def test_a_commit_decision_whose_only_pending_branch_was_abandoned_finishes_committed() -> None:
    tx, actions = recovered(record("committing", "committed", ("a", "committed"), ("b", "abandoned")))
    assert actions == [SendCommit(("a",))]  # a's acknowledgement is not relied on
    assert tx.branches["b"].state is BranchState.ABANDONED


def test_a_branch_forced_against_the_decision_keeps_its_damage_after_a_restart() -> None:
    forced = TransactionRecord(
        gtid="g1",
        state="committing",
        decision="committed",
        created_at=1.0,
        updated_at=2.0,
        deadline=30.0,
        branches=(BranchRecord("a", "prepared"), BranchRecord("b", "aborted", heuristic="aborted")),
        heuristic=True,
    )
    tx, actions = recovered(forced)
    assert actions == [SendCommit(("a",))]
    assert tx.heuristic and tx.record().branches[1].heuristic == "aborted"
