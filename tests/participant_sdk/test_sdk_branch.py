"""One branch's rules at a participant, one rule per test: the log row and the event
in, what the driver must do (or the refusal) out."""

from __future__ import annotations

from typing import Any

import pytest

from participant_sdk import _branch as rules
from participant_sdk._branch import Apply, LogVote, Reconcile
from participant_sdk.errors import (
    AlreadyCommitted,
    BranchExists,
    EnlistFailed,
    EnlistRefused,
    NotInDoubt,
    NotPrepared,
    PayloadMismatch,
)
from participant_sdk.log import BranchRecord, RecordState
from participant_sdk.resource import PrepareResult
from twopc_core.protocol import BranchStatus, Outcome, OutcomeResponse, PrepareResponse, StatusResponse, Vote

G, B = "g1", "p1"
WORK = {"n": 1}
DIGEST = rules.payload_hash(WORK)


def row(
    status: RecordState,
    vote: Vote | None = Vote.YES,
    reason: str | None = None,
    digest: str | None = DIGEST,
    heuristic: bool = False,
) -> BranchRecord:
    return BranchRecord(G, B, status, vote, reason, digest, 1.0, 1.0, heuristic)


def view(outcome: str | None, branches: list[str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"gtid": G, "outcome": outcome}
    if branches is not None:
        body["branches"] = [{"name": name} for name in branches]
    return body


# -- prepare ------------------------------------------------------------------------------


def test_prepare_of_a_branch_never_seen_asks_the_resource() -> None:
    assert rules.prepare(None, DIGEST) is rules.PREPARE_AT_RESOURCE


def test_repeated_prepare_answers_the_logged_yes() -> None:
    assert rules.prepare(row(RecordState.PREPARED), DIGEST) == PrepareResponse(vote=Vote.YES)


def test_repeated_prepare_with_other_work_is_a_payload_mismatch() -> None:
    with pytest.raises(PayloadMismatch) as refused:
        rules.prepare(row(RecordState.PREPARED), rules.payload_hash({"n": 2}))

    assert refused.value.details == {"gtid": G, "branch": B}


def test_repeated_prepare_repeats_a_no_with_its_reason() -> None:
    answer = rules.prepare(row(RecordState.ABORTED, Vote.NO, "out of stock"), DIGEST)

    assert answer == PrepareResponse(vote=Vote.NO, reason="out of stock")


def test_repeated_prepare_repeats_a_read_only_with_its_reason() -> None:
    answer = rules.prepare(row(RecordState.READ_ONLY, Vote.READ_ONLY, "nothing to do"), DIGEST)

    assert answer == PrepareResponse(vote=Vote.READ_ONLY, reason="nothing to do")


def test_prepare_of_a_committed_branch_answers_yes() -> None:
    assert rules.prepare(row(RecordState.COMMITTED), DIGEST) == PrepareResponse(vote=Vote.YES)


def test_prepare_after_an_abort_of_a_prepared_branch_votes_no() -> None:
    answer = rules.prepare(row(RecordState.ABORTED, Vote.YES), DIGEST)

    assert answer == PrepareResponse(vote=Vote.NO, reason="already aborted")


def test_a_remembered_abort_makes_a_late_prepare_of_any_work_vote_no() -> None:
    remembered = row(RecordState.ABORTED, vote=None, digest=None)

    answer = rules.prepare(remembered, rules.payload_hash({"other": True}))

    assert answer == PrepareResponse(vote=Vote.NO, reason="already aborted")


# -- votes --------------------------------------------------------------------------------


def test_a_yes_is_logged_prepared_and_durably() -> None:
    assert rules.log_of_vote(Vote.YES) == LogVote(Vote.YES, RecordState.PREPARED, durable=True, drop_staged=False)


def test_a_yes_at_a_resource_holding_the_branch_state_is_logged_lazily() -> None:
    step = rules.log_of_vote(Vote.YES, held_by_resource=True)

    assert step == LogVote(Vote.YES, RecordState.PREPARED, durable=False, drop_staged=False)


@pytest.mark.parametrize("vote", [Vote.NO, Vote.READ_ONLY])
def test_a_no_or_read_only_is_logged_alike_wherever_the_branch_state_is_held(vote: Vote) -> None:
    assert rules.log_of_vote(vote, held_by_resource=True) == rules.log_of_vote(vote)


def test_a_no_drops_what_was_staged_and_is_logged_lazily() -> None:
    assert rules.log_of_vote(Vote.NO) == LogVote(Vote.NO, RecordState.ABORTED, durable=False, drop_staged=True)


def test_a_read_only_drops_nothing_and_is_logged_lazily() -> None:
    step = rules.log_of_vote(Vote.READ_ONLY)

    assert step == LogVote(Vote.READ_ONLY, RecordState.READ_ONLY, durable=False, drop_staged=False)


def test_a_no_without_a_reason_is_counted_with_one() -> None:
    assert rules.counted_vote(PrepareResult(Vote.NO)) == PrepareResult(Vote.NO, "resource voted no")


def test_a_yes_is_counted_without_a_reason() -> None:
    assert rules.counted_vote(PrepareResult(Vote.YES, "chatty resource")) == PrepareResult(Vote.YES)


def test_a_prepare_that_raised_votes_no_naming_the_exception() -> None:
    assert rules.failed_prepare(RuntimeError("disk on fire")) == PrepareResult(Vote.NO, "RuntimeError: disk on fire")


def test_a_yes_that_could_not_be_logged_is_taken_back_as_a_no() -> None:
    assert rules.yes_not_logged() == PrepareResult(Vote.NO, "participant log write failed")


def test_a_vote_is_answered_with_its_reason() -> None:
    assert rules.vote_answer(PrepareResult(Vote.NO, "full")) == PrepareResponse(vote=Vote.NO, reason="full")


# -- commit -------------------------------------------------------------------------------


def test_commit_of_a_branch_never_seen_is_not_prepared() -> None:
    with pytest.raises(NotPrepared) as refused:
        rules.commit(None, G, B)

    assert refused.value.details == {"gtid": G, "branch": B}


def test_commit_of_a_prepared_branch_applies_it_and_logs_it_lazily() -> None:
    step = rules.commit(row(RecordState.PREPARED), G, B)

    assert isinstance(step, Apply)
    assert (step.outcome, step.state, step.durable, step.heuristic) == (
        Outcome.COMMITTED,
        RecordState.COMMITTED,
        False,
        False,
    )
    assert step.answer == OutcomeResponse(status=Outcome.COMMITTED)


def test_commit_of_a_committed_branch_answers_committed() -> None:
    assert rules.commit(row(RecordState.COMMITTED), G, B) == OutcomeResponse(status=Outcome.COMMITTED)


def test_commit_of_an_aborted_branch_answers_aborted_with_its_reason() -> None:
    answer = rules.commit(row(RecordState.ABORTED, Vote.NO, "full"), G, B)

    assert answer == OutcomeResponse(status=Outcome.ABORTED, reason="full")


def test_commit_of_a_heuristically_committed_branch_says_so_in_the_reason() -> None:
    forced = row(RecordState.COMMITTED, reason="heuristic committed by operator", heuristic=True)

    answer = rules.commit(forced, G, B)

    assert answer == OutcomeResponse(status=Outcome.COMMITTED, reason=forced.reason, heuristic=True)


def test_commit_of_a_heuristically_aborted_branch_answers_what_was_done_as_heuristic() -> None:
    forced = row(RecordState.ABORTED, reason="heuristic aborted by operator", heuristic=True)

    answer = rules.commit(forced, G, B)

    assert answer == OutcomeResponse(status=Outcome.ABORTED, reason=forced.reason, heuristic=True)


# -- one-phase commit -----------------------------------------------------------------------


def test_one_phase_commit_of_a_branch_never_seen_prepares_it_first() -> None:
    assert rules.commit_one_phase(None, DIGEST) is rules.PREPARE_AT_RESOURCE


def test_one_phase_commit_commits_after_a_yes() -> None:
    step = rules.one_phase_voted(PrepareResponse(vote=Vote.YES))

    assert isinstance(step, Apply) and step.outcome is Outcome.COMMITTED


def test_one_phase_commit_after_a_no_answers_aborted_with_the_reason() -> None:
    answer = rules.one_phase_voted(PrepareResponse(vote=Vote.NO, reason="full"))

    assert answer == OutcomeResponse(status=Outcome.ABORTED, reason="full")


def test_one_phase_commit_of_a_read_only_branch_answers_as_its_repeat_does() -> None:
    first = rules.one_phase_voted(PrepareResponse(vote=Vote.READ_ONLY, reason="nothing to do"))
    repeat = rules.commit_one_phase(row(RecordState.READ_ONLY, Vote.READ_ONLY, "nothing to do"), DIGEST)

    assert first == repeat == OutcomeResponse(status=Outcome.COMMITTED, reason="nothing to do")


def test_one_phase_commit_of_a_branch_left_prepared_commits_it() -> None:
    step = rules.commit_one_phase(row(RecordState.PREPARED), DIGEST)

    assert isinstance(step, Apply) and step.outcome is Outcome.COMMITTED


def test_one_phase_commit_repeated_with_other_work_is_a_payload_mismatch() -> None:
    with pytest.raises(PayloadMismatch):
        rules.commit_one_phase(row(RecordState.COMMITTED), rules.payload_hash({"n": 2}))


# -- abort --------------------------------------------------------------------------------


def test_abort_of_a_branch_never_seen_is_remembered() -> None:
    step = rules.abort(None, G, B)

    assert step is rules.REMEMBER_ABORT
    assert (step.state, step.answer) == (RecordState.ABORTED, OutcomeResponse(status=Outcome.ABORTED))


def test_abort_of_a_read_only_branch_is_remembered() -> None:
    assert rules.abort(row(RecordState.READ_ONLY, Vote.READ_ONLY), G, B) is rules.REMEMBER_ABORT


def test_abort_of_a_prepared_branch_applies_it_and_logs_it_lazily() -> None:
    step = rules.abort(row(RecordState.PREPARED), G, B)

    assert isinstance(step, Apply)
    assert (step.outcome, step.state, step.durable) == (Outcome.ABORTED, RecordState.ABORTED, False)


def test_abort_of_an_aborted_branch_answers_aborted_without_a_reason() -> None:
    answer = rules.abort(row(RecordState.ABORTED, Vote.NO, "full"), G, B)

    assert answer == OutcomeResponse(status=Outcome.ABORTED)


def test_abort_of_a_committed_branch_no_operator_forced_is_refused() -> None:
    with pytest.raises(AlreadyCommitted) as refused:
        rules.abort(row(RecordState.COMMITTED), G, B)

    assert refused.value.details == {"gtid": G, "branch": B, "heuristic": False}


def test_abort_of_a_heuristically_committed_branch_answers_committed_as_heuristic() -> None:
    answer = rules.abort(row(RecordState.COMMITTED, reason="heuristic committed by operator", heuristic=True), G, B)

    assert answer == OutcomeResponse(status=Outcome.COMMITTED, reason="heuristic committed by operator", heuristic=True)


# -- status -------------------------------------------------------------------------------


def test_status_of_a_branch_never_seen_is_unknown() -> None:
    assert rules.status(None) == StatusResponse(status=BranchStatus.UNKNOWN)


def test_status_of_a_read_only_branch_is_committed() -> None:
    assert rules.status(row(RecordState.READ_ONLY, Vote.READ_ONLY)).status is BranchStatus.COMMITTED


def test_status_reports_an_outcome_an_operator_forced() -> None:
    answer = rules.status(row(RecordState.ABORTED, heuristic=True))

    assert answer == StatusResponse(status=BranchStatus.ABORTED, heuristic=True)


# -- outcomes learnt elsewhere ----------------------------------------------------------------


@pytest.mark.parametrize("outcome", list(Outcome))
def test_the_coordinators_outcome_is_applied_to_a_prepared_branch_lazily(outcome: Outcome) -> None:
    step = rules.resolve(row(RecordState.PREPARED), outcome)

    assert step is not None and (step.outcome, step.durable, step.heuristic) == (outcome, False, False)


@pytest.mark.parametrize("state", [RecordState.COMMITTED, RecordState.ABORTED, RecordState.READ_ONLY, None])
def test_the_coordinators_outcome_changes_nothing_for_a_branch_not_prepared(state: RecordState | None) -> None:
    assert rules.resolve(None if state is None else row(state), Outcome.ABORTED) is None


def test_a_heuristic_outcome_is_logged_durably_as_heuristic_with_its_reason() -> None:
    step = rules.force(row(RecordState.PREPARED), Outcome.ABORTED, G, B)

    assert (step.outcome, step.state, step.durable, step.heuristic, step.reason) == (
        Outcome.ABORTED,
        RecordState.ABORTED,
        True,
        True,
        "heuristic aborted by operator",
    )


def test_a_heuristic_outcome_for_a_branch_not_in_doubt_is_refused() -> None:
    with pytest.raises(NotInDoubt):
        rules.force(row(RecordState.COMMITTED), Outcome.ABORTED, G, B)


def test_a_coordinator_without_a_record_of_the_transaction_means_abort() -> None:
    assert rules.outcome_for_branch(None, B) is Outcome.ABORTED


def test_an_undecided_transaction_decides_nothing() -> None:
    assert rules.outcome_for_branch(view(None), B) is None


def test_a_transaction_committed_with_the_branch_commits_it() -> None:
    assert rules.outcome_for_branch(view("committed", [B, "other"]), B) is Outcome.COMMITTED


def test_a_transaction_committed_without_the_branch_aborts_it() -> None:
    assert rules.outcome_for_branch(view("committed", ["other"]), B) is Outcome.ABORTED


def test_an_outcome_that_cannot_be_read_decides_nothing() -> None:
    assert rules.outcome_for_branch(view("maybe"), B) is None


@pytest.mark.parametrize(("status", "no_record"), [(404, True), (409, False), (500, False), (503, False)])
def test_only_a_404_to_an_inquiry_means_the_coordinator_has_no_record(status: int, no_record: bool) -> None:
    assert rules.coordinator_has_no_record(status) is no_record


# -- early prepare ------------------------------------------------------------------------


def test_an_early_branch_logs_its_yes_durably() -> None:
    assert rules.early_branch(None, G, B) == rules.log_of_vote(Vote.YES)


def test_an_early_branch_at_a_resource_holding_the_branch_state_logs_its_yes_lazily() -> None:
    assert rules.early_branch(None, G, B, held_by_resource=True).durable is False


def test_an_early_branch_the_log_knows_is_refused() -> None:
    with pytest.raises(BranchExists) as refused:
        rules.early_branch(row(RecordState.ABORTED), G, B)

    assert refused.value.details == {"gtid": G, "branch": B, "status": "aborted"}


@pytest.mark.parametrize(
    ("status", "refused"), [(404, True), (409, True), (422, True), (400, False), (500, False), (503, False)]
)
def test_enlistment_answers_that_refuse_the_branch(status: int, refused: bool) -> None:
    assert rules.enlistment_refused(status) is refused


def test_a_refused_enlistment_names_the_coordinators_error() -> None:
    error = rules.enlist_refused(G, B, "wrong_state", "transaction is committed")

    assert isinstance(error, EnlistRefused)
    assert error.details == {"gtid": G, "branch": B, "coordinator_error": "wrong_state"}
    assert "the branch was aborted" in error.message


def test_a_failed_enlistment_says_the_branch_stays_in_doubt() -> None:
    error = rules.enlist_failed(G, B, "503 not_ready: later")

    assert isinstance(error, EnlistFailed)
    assert "the branch stays in doubt" in error.message


# -- start-up ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "step"),
    [
        (None, Reconcile.ADOPT),
        (RecordState.PREPARED, Reconcile.KEEP),
        (RecordState.COMMITTED, Reconcile.COMMIT_AGAIN),
        (RecordState.ABORTED, Reconcile.ABORT_AGAIN),
        (RecordState.READ_ONLY, Reconcile.ABORT_AGAIN),
    ],
)
def test_a_branch_the_resource_holds_at_start_is_lined_up_with_its_row(
    state: RecordState | None, step: Reconcile
) -> None:
    assert rules.reconcile(None if state is None else row(state)) is step


@pytest.mark.parametrize(
    ("status", "state"),
    [
        (BranchStatus.PREPARED, RecordState.PREPARED),
        (BranchStatus.COMMITTED, RecordState.COMMITTED),
        (BranchStatus.ABORTED, RecordState.ABORTED),
    ],
)
def test_a_branch_the_log_lost_stands_for_what_the_resource_holds(status: BranchStatus, state: RecordState) -> None:
    found = rules.row_from_resource(G, B, status, now=5.0)

    assert found is not None
    assert (found.key, found.status, found.vote, found.updated_at) == ((G, B), state, None, 5.0)


def test_a_branch_unknown_to_the_resource_has_no_row() -> None:
    assert rules.row_from_resource(G, B, BranchStatus.UNKNOWN, now=5.0) is None


def test_a_branch_found_prepared_in_the_resource_answers_a_repeated_prepare_of_any_work_yes() -> None:
    found = rules.row_from_resource(G, B, BranchStatus.PREPARED, now=5.0)

    assert rules.prepare(found, rules.payload_hash({"other": 2})) == PrepareResponse(vote=Vote.YES)


def test_a_branch_found_committed_in_the_resource_answers_a_repeated_commit_committed() -> None:
    found = rules.row_from_resource(G, B, BranchStatus.COMMITTED, now=5.0)

    assert rules.commit(found, G, B) == OutcomeResponse(status=Outcome.COMMITTED)


def test_a_branch_found_committed_in_the_resource_refuses_an_abort() -> None:
    with pytest.raises(AlreadyCommitted):
        rules.abort(rules.row_from_resource(G, B, BranchStatus.COMMITTED, now=5.0), G, B)


# -- helpers --------------------------------------------------------------------------------


def test_payload_digest_ignores_key_order() -> None:
    assert rules.payload_hash({"a": 1, "b": 2}) == rules.payload_hash({"b": 2, "a": 1})


def test_payload_digest_takes_integers_past_64_bits() -> None:
    assert rules.payload_hash({"n": 2**70}) != rules.payload_hash({"n": 2**71})


def test_no_payload_has_no_digest() -> None:
    assert rules.payload_hash(None) is None
