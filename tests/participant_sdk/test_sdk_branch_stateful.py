"""Random event sequences against one branch's rules at a participant.

The test carries out the rules' decisions as the driver does — a log with durable and
lazy writes (a crash keeps the durable row and some of the lazy ones after it), a
resource that stages, commits and drops the branch's work — and keeps its own record
of what the coordinator decided and said and what the participant answered and did.
After every step it checks the protocol's promises against that record, without
looking at how the rules reach their answers.

The coordinator is a correct one that may lose answers, repeat calls, send late
duplicates and forget transactions it never decided; the transaction is one of three
kinds: work at prepare, early prepare, or one-phase.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from participant_sdk import _branch as rules
from participant_sdk._branch import Apply, LogVote, PrepareAtResource, Reconcile
from participant_sdk.errors import ParticipantError, PayloadMismatch, ResourceFailed
from participant_sdk.log import BranchRecord, RecordState
from participant_sdk.resource import PrepareResult
from twopc_core.protocol import BranchStatus, Outcome, OutcomeResponse, PrepareResponse, StatusResponse, Vote

GTID, BRANCH = "g", "p"
WORK: dict[str, Any] = {"items": [1]}
OTHER_WORK: dict[str, Any] = {"items": [2]}

#: What the resource does when asked to prepare.
resource_votes = st.sampled_from(["yes", "yes", "yes", "no", "no_reason", "read_only", "read_only_reason", "raise"])
#: Mostly the branch's own work, sometimes a call carrying other work.
payloads = st.sampled_from([WORK, WORK, WORK, OTHER_WORK])
delivered = st.booleans()
fails = st.sampled_from([False, False, False, True])


class LogFailed(Exception):
    pass


class ResourceDown(Exception):
    pass


@dataclass
class ModelResource:
    """The branch's work at the resource: staged (prepared), committed or dropped."""

    staged: bool = False
    committed: bool = False
    #: The work last staged.
    work: Any = None
    prepares: int = 0
    calls: list[str] = field(default_factory=list)

    def prepare(self, vote: str, work: Any) -> PrepareResult:
        self.prepares += 1
        self.calls.append("prepare")
        if vote == "raise":
            raise ResourceDown("disk on fire")
        if vote.startswith("yes"):
            self.staged, self.work = True, work
            return PrepareResult(Vote.YES)
        if vote.startswith("read_only"):
            return PrepareResult(Vote.READ_ONLY, "nothing to do" if vote.endswith("reason") else None)
        return PrepareResult(Vote.NO, "out of stock" if vote == "no_reason" else None)

    def commit(self, fail: bool) -> None:
        self.calls.append("commit")
        if fail:
            raise ResourceDown("commit refused")
        if self.staged:
            self.staged, self.committed = False, True

    def abort(self, fail: bool) -> None:
        self.calls.append("abort")
        if fail:
            raise ResourceDown("abort refused")
        self.staged = False


def _comparable(answer: object) -> object:
    if isinstance(answer, ParticipantError):
        return (type(answer), answer.message, answer.details)
    return answer


class BranchMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.kind = "prepare"
        # -- the participant: its log and its resource --
        self.row: BranchRecord | None = None
        #: The last row a durable write put on disk, and the lazy writes queued after it.
        self.durable: BranchRecord | None = None
        self.lazy: list[BranchRecord] = []
        self.resource = ModelResource()
        # -- the coordinator --
        #: Its decision for this branch's work (a commit only ever includes a branch
        #: whose YES it heard).
        self.decision: Outcome | None = None
        self.heard_yes = False
        #: A one-phase commit was sent: the coordinator left the decision to the participant.
        self.one_phase_sent = False
        # -- what the participant answered and did --
        #: Each call's last answer, with the row it left.
        self.answers: dict[tuple[str, str], tuple[BranchRecord | None, object]] = {}
        #: The work was staged under a durable PREPARED row: a promise to the coordinator.
        self.promised = False
        #: The row was prepared at some time (the in-doubt loop may be asking about it).
        self.was_prepared = False
        #: The promised work was dropped at the resource.
        self.promise_dropped = False
        #: The outcomes logged for the promised branch, until an operator forced one.
        self.row_outcomes: set[RecordState] = set()
        #: Outcomes the participant reported (answers, status) since it promised, until
        #: an operator forced one.
        self.reported: set[Outcome] = set()
        self.forced: Outcome | None = None
        self.event = ""
        #: The last protocol call, to send again as a duplicate the network delivers
        #: late (its answer reaching nobody); a crash ends the connection it was on.
        self.last_call: Callable[[], None] | None = None

    # -- start ------------------------------------------------------------------

    @initialize(kind=st.sampled_from(["prepare", "early", "one_phase"]))
    def start(self, kind: str) -> None:
        """A branch of a transaction with work at prepare, an early-prepared one, or the
        only branch of its transaction (one-phase)."""
        self.kind = kind

    # -- the log, as the driver's writes see it ----------------------------------------

    def _write(self, state: RecordState, *, durable: bool, fail: bool = False, **fields: Any) -> None:
        if durable and fail:
            raise LogFailed("disk full")
        old = self.row or BranchRecord(GTID, BRANCH, state, None, None, None, 0.0, 0.0)
        self.row = replace(old, status=state, **fields)
        if durable:
            self.durable, self.lazy = self.row, []
        else:
            self.lazy.append(self.row)
        if durable and self.row.status is RecordState.PREPARED and self.resource.staged:
            self.promised = True
        self.was_prepared = self.was_prepared or state is RecordState.PREPARED
        if self.promised and self.forced is None and state in (RecordState.COMMITTED, RecordState.ABORTED):
            self.row_outcomes.add(state)

    # -- carrying out the rules' decisions, as the driver does -----------------------

    def _prepare_new(self, vote_of_resource: str, log_fails: bool, payload: Any) -> PrepareResponse:
        try:
            vote = self.resource.prepare(vote_of_resource, payload)
        except Exception as exc:
            vote = rules.failed_prepare(exc)
        vote = rules.counted_vote(vote)
        step = rules.log_of_vote(vote.vote)
        if step.durable:
            try:
                self._log_vote(step, vote, payload, fail=log_fails)
            except LogFailed:
                vote = rules.yes_not_logged()
                step = rules.log_of_vote(vote.vote)
            else:
                return rules.vote_answer(vote)
        if step.drop_staged:
            self._drop(fail=False, before_any_yes=True)
        self._log_vote(step, vote, payload)
        return rules.vote_answer(vote)

    def _log_vote(self, step: LogVote, vote: PrepareResult, payload: Any, fail: bool = False) -> None:
        self._write(
            step.state,
            durable=step.durable,
            fail=fail,
            vote=step.vote,
            reason=vote.reason,
            payload_hash=rules.payload_hash(payload),
        )

    def _apply(self, step: Apply, resource_fails: bool) -> None:
        try:
            if step.outcome is Outcome.COMMITTED:
                self._commit(resource_fails)
            else:
                self._drop(resource_fails)
        except ResourceDown as exc:
            raise rules.resource_failed(step.outcome, GTID, BRANCH, exc) from exc
        if step.heuristic:
            self._write(step.state, durable=step.durable, heuristic=True, reason=step.reason)
        else:
            self._write(step.state, durable=step.durable)

    def _commit(self, fail: bool) -> None:
        """Commit at the resource, checking the work is prepared on disk first: in
        particular a one-phase commit's, so that a crash between the resource's commit
        and its log row leaves the branch in doubt, never unknown."""
        assert self.durable is not None and self.durable.status in (RecordState.PREPARED, RecordState.COMMITTED), (
            f"committing on {self.event}, but the disk holds {self.durable}"
        )
        self.resource.commit(fail)

    def _drop(self, fail: bool, before_any_yes: bool = False) -> None:
        """Abort at the resource, noting whether that dropped promised work. Staged work
        is dropped on the participant's own account only before any YES for it left."""
        if self.resource.staged and not before_any_yes and not fail:
            assert self.decision is Outcome.ABORTED or self.forced is Outcome.ABORTED, (
                f"staged work dropped on {self.event} without the coordinator's word"
            )
        promised_work = self.promised and self.resource.staged
        self.resource.abort(fail)
        self.promise_dropped = self.promise_dropped or promised_work

    # -- protocol calls -------------------------------------------------------------

    def _call(self, name: str, payload: Any, call: Any) -> object:
        """Make one call; a repeat (the same call, the row as the first left it) must
        answer as the first did and change nothing. Note what it reported."""
        key = (name, repr(payload))
        before, resource_calls = self.row, len(self.resource.calls)
        try:
            answer: object = call()
        except ParticipantError as exc:
            answer = exc
        if isinstance(answer, ResourceFailed):
            return answer  # a failing resource: the same call may well succeed next time
        if key in self.answers and self.answers[key][0] == before:
            first = self.answers[key][1]
            assert _comparable(answer) == _comparable(first), (
                f"repeated {name} answered {answer!r}, the first {first!r}"
            )
            assert self.row == before, f"a repeated {name} changed the row"
            assert len(self.resource.calls) == resource_calls, f"a repeated {name} reached the resource"
        self.answers[key] = (self.row, answer)
        # An operator's heuristic may contradict what was done (it is reported as such).
        if self.promised and self.forced is None:
            if isinstance(answer, OutcomeResponse):
                self.reported.add(answer.status)
            elif isinstance(answer, StatusResponse) and answer.status in (BranchStatus.COMMITTED, BranchStatus.ABORTED):
                self.reported.add(Outcome(answer.status.value))
        return answer

    @precondition(lambda self: self.kind == "prepare")
    @rule(payload=payloads, vote=resource_votes, log_fails=fails, reaches=delivered)
    def prepare(self, payload: Any, vote: str, log_fails: bool, reaches: bool) -> None:
        """A prepare, maybe a duplicate or a late one; its answer may be lost."""
        self.event = "prepare"
        before, prepares = self.row, self.resource.prepares

        def call() -> PrepareResponse:
            step = rules.prepare(self.row, rules.payload_hash(payload))
            if isinstance(step, PrepareResponse):
                return step
            return self._prepare_new(vote, log_fails, payload)

        answer = self._call("prepare", payload, call)
        if before is not None and before.status is RecordState.ABORTED:
            voted_no = isinstance(answer, PrepareResponse) and answer.vote is Vote.NO
            assert voted_no or isinstance(answer, PayloadMismatch), (
                f"a prepare after a logged abort answered {answer!r}"
            )
            assert self.resource.prepares == prepares, "a prepare after a logged abort reached the resource"
        if isinstance(answer, PrepareResponse) and answer.vote is Vote.YES:
            assert self.durable is not None and self.durable.status in (RecordState.PREPARED, RecordState.COMMITTED), (
                "a YES left before it was on disk"
            )
            if self.row is not None and self.row.vote is not None:
                assert self.resource.work == payload, (
                    f"a YES for {payload}, but the resource holds {self.resource.work}"
                )
            if reaches and self.decision is None:
                self.heard_yes = True
        if isinstance(answer, PrepareResponse) and answer.vote is Vote.NO and reaches and self.decision is None:
            self.decision = Outcome.ABORTED
        self.last_call = partial(self.prepare, payload, vote, log_fails, reaches=False)

    @precondition(lambda self: self.kind == "one_phase" and self.decision is None)
    @rule(payload=payloads, vote=resource_votes, log_fails=fails, resource_fails=fails, reaches=delivered)
    def commit_one_phase(self, payload: Any, vote: str, log_fails: bool, resource_fails: bool, reaches: bool) -> None:
        """The coordinator's one-phase commit, retried until an answer reaches it: that
        answer is the transaction's outcome."""
        self.event = "one_phase"
        self.one_phase_sent = True

        def call() -> OutcomeResponse:
            step = rules.commit_one_phase(self.row, rules.payload_hash(payload))
            if isinstance(step, PrepareAtResource):
                step = rules.one_phase_voted(self._prepare_new(vote, log_fails, payload))
            if isinstance(step, OutcomeResponse):
                return step
            self._apply(step, resource_fails)
            return step.answer

        answer = self._call("one_phase", payload, call)
        self._check_outcome_answer(answer)
        if isinstance(answer, OutcomeResponse) and self.resource.committed and self.row and self.row.vote is Vote.YES:
            assert self.resource.work == payload, f"committed {payload}, but the resource holds {self.resource.work}"
        if isinstance(answer, OutcomeResponse) and reaches and self.decision is None:
            self.decision = answer.status
        self.last_call = partial(self.commit_one_phase, payload, vote, log_fails, resource_fails, reaches=False)

    def _commit_call(self, resource_fails: bool) -> OutcomeResponse:
        step = rules.commit(self.row, GTID, BRANCH)
        if isinstance(step, OutcomeResponse):
            return step
        self._apply(step, resource_fails)
        return step.answer

    def _abort_call(self, resource_fails: bool) -> OutcomeResponse:
        step = rules.abort(self.row, GTID, BRANCH)
        if isinstance(step, OutcomeResponse):
            return step
        if isinstance(step, Apply):
            self._apply(step, resource_fails)
        else:
            self._write(step.state, durable=False)
        return step.answer

    def _check_outcome_answer(self, answer: object) -> None:
        """An outcome answered for work this branch prepared is the resource's state.

        A heuristic answer reports what an operator forced, and must say so: whether the
        resource still held the work then (an abort lost in a crash before a forced
        commit) is the force's matter, not the answer's."""
        if isinstance(answer, OutcomeResponse) and answer.heuristic:
            assert self.row is not None and self.row.heuristic, "a heuristic answer for a branch nobody forced"
            return
        if isinstance(answer, OutcomeResponse) and self.row is not None and self.row.vote is Vote.YES:
            if answer.status is Outcome.COMMITTED:
                assert self.resource.committed, "answered committed, but the resource did not commit"
            else:
                assert not self.resource.staged, "answered aborted, but the resource still holds the work"

    @precondition(lambda self: self.decision is Outcome.COMMITTED)
    @rule(resource_fails=fails)
    def commit(self, resource_fails: bool) -> None:
        """Phase 2's commit, sent (and repeated) once the coordinator decided commit."""
        self.event = "commit"
        self._check_outcome_answer(self._call("commit", None, lambda: self._commit_call(resource_fails)))
        self.last_call = partial(self.commit, resource_fails)

    @precondition(lambda self: self.decision is Outcome.ABORTED)
    @rule(resource_fails=fails)
    def abort(self, resource_fails: bool) -> None:
        """Phase 2's abort (or the abort of a branch whose vote never arrived)."""
        self.event = "abort"
        self._check_outcome_answer(self._call("abort", None, lambda: self._abort_call(resource_fails)))
        self.last_call = partial(self.abort, resource_fails)

    @precondition(lambda self: self.row is not None and self.row.status is RecordState.COMMITTED)
    @rule()
    def late_abort(self) -> None:
        """An abort out of turn (a stale retry, a confused client) for a committed branch."""
        self.event = "late abort"
        self._check_outcome_answer(self._call("abort", None, lambda: self._abort_call(resource_fails=False)))

    @precondition(lambda self: self.row is not None and self.row.status is RecordState.ABORTED)
    @rule()
    def late_commit(self) -> None:
        """A commit out of turn for an aborted branch."""
        self.event = "late commit"
        self._check_outcome_answer(self._call("commit", None, lambda: self._commit_call(resource_fails=False)))

    @rule()
    def status(self) -> None:
        self.event = "status"
        answer = self._call("status", None, lambda: rules.status(self.row))
        if self.kind == "one_phase" and self.one_phase_sent and self.decision is None:
            # A recovering coordinator settles a one-phase commit from the branch's status.
            assert isinstance(answer, StatusResponse)
            prepared = answer.status in (BranchStatus.PREPARED, BranchStatus.COMMITTED)
            self.decision = Outcome.COMMITTED if prepared else Outcome.ABORTED

    @precondition(lambda self: self.last_call is not None)
    @rule()
    def duplicate(self) -> None:
        """The last call once more: a retry whose first try did arrive, or a duplicate."""
        assert self.last_call is not None
        self.last_call()

    # -- the coordinator decides --------------------------------------------------------

    @precondition(lambda self: self.decision is None and self.kind != "one_phase")
    @rule(outcome=st.sampled_from(Outcome))
    def coordinator_decides(self, outcome: Outcome) -> None:
        """Commit only with every YES in (this branch's included); abort at any time."""
        if outcome is Outcome.COMMITTED and not self.heard_yes:
            return
        self.decision = outcome

    # -- in doubt -------------------------------------------------------------------------

    @precondition(lambda self: self.was_prepared)
    @rule(no_record=st.booleans(), without_us=st.booleans(), resource_fails=fails)
    def inquiry(self, no_record: bool, without_us: bool, resource_fails: bool) -> None:
        """The in-doubt loop asks about a branch it found prepared (which phase 2 may
        have finished since) and applies the answer."""
        self.event = "inquiry"
        view: dict[str, Any] | None
        if self.decision is Outcome.COMMITTED:
            view = {"outcome": "committed", "branches": [{"name": BRANCH}]}
        elif self.decision is Outcome.ABORTED:
            view = None if no_record else {"outcome": "aborted"}
        elif self.kind != "one_phase" and no_record:
            view = None  # never decided, and forgot the transaction: presumed abort
            self.decision = Outcome.ABORTED
        elif self.kind != "one_phase" and without_us and not self.heard_yes:
            view = {"outcome": "committed", "branches": [{"name": "someone-else"}]}
            self.decision = Outcome.ABORTED  # for this branch: the commit went without it
        else:
            view = {"outcome": None}
        outcome = rules.outcome_for_branch(view, BRANCH)
        assert outcome is self.decision, (
            f"the inquiry read {outcome} from {view}, the coordinator decided {self.decision}"
        )
        if outcome is None:
            return
        step = rules.resolve(self.row, outcome)
        if step is None:
            return
        try:
            self._apply(step, resource_fails)
        except ResourceFailed:
            pass  # retried in the next round

    # -- early prepare ------------------------------------------------------------------

    @precondition(lambda self: self.kind == "early")
    @rule(log_fails=fails, answer=st.sampled_from(["enlisted", "refused", "failed", "unreachable"]), reaches=delivered)
    def early_branch(self, log_fails: bool, answer: str, reaches: bool) -> None:
        """The application does the branch's work early, then enlists it as prepared."""
        self.event = "early"
        try:
            step = rules.early_branch(self.row, GTID, BRANCH)
        except ParticipantError:
            assert self.row is not None
            return
        self.resource.prepare("yes", None)
        try:
            self._write(step.state, durable=step.durable, fail=log_fails, vote=step.vote)
        except LogFailed:
            self._drop(fail=False, before_any_yes=True)  # nobody heard this YES yet
            return
        if answer == "enlisted" or (answer == "failed" and reaches):
            self.heard_yes = self.heard_yes or self.decision is None
        elif answer == "refused":
            # The coordinator will never commit with this branch.
            assert self.decision is not Outcome.COMMITTED
            self.decision = Outcome.ABORTED
            abort = rules.resolve(self.row, Outcome.ABORTED)
            assert abort is not None
            self._apply(abort, resource_fails=False)

    # -- the operator ----------------------------------------------------------------------

    @rule(outcome=st.sampled_from(Outcome))
    def force(self, outcome: Outcome) -> None:
        """A heuristic outcome, forced by an operator."""
        self.event = "force"
        before = self.row
        try:
            step = rules.force(self.row, outcome, GTID, BRANCH)
        except ParticipantError:
            assert before is None or before.status is not RecordState.PREPARED, "refused for a branch in doubt"
            return
        assert before is not None and before.status is RecordState.PREPARED, "forced on a branch not in doubt"
        self.forced = outcome
        self._apply(step, resource_fails=False)
        assert self.durable == self.row, "a heuristic outcome was not written durably"
        assert rules.status(self.row).heuristic, "status does not report the heuristic outcome"

    # -- restarts ---------------------------------------------------------------------------

    @precondition(lambda self: self.kind != "early" and self.row is None)
    @rule(payload=payloads)
    def crash_after_staging(self, payload: Any) -> None:
        """The resource staged a prepare's work, then the process died before the YES was
        logged (or sent)."""
        self.event = "crash"
        self.one_phase_sent = self.one_phase_sent or self.kind == "one_phase"
        self.resource.prepare("yes", payload)
        self.restart(kept=0)

    @rule(kept=st.integers(0, 3))
    def restart(self, kept: int) -> None:
        """A crash keeps the durable row and the first ``kept`` lazy writes after it; the
        start then lines the log up with what the resource holds."""
        self.event = "restart"
        self.last_call = None
        self.row = ([self.durable, *self.lazy])[min(kept, len(self.lazy))]
        self.durable, self.lazy = self.row, []
        self.sweep()

    @rule()
    def sweep(self) -> None:
        """What the start (and the periodic sweep) does with a branch the resource holds."""
        if not self.resource.staged:
            return
        step = rules.reconcile(self.row)
        if step is Reconcile.ADOPT:
            self._write(RecordState.PREPARED, durable=True, reason=rules.ADOPTED_REASON)
        elif step is Reconcile.COMMIT_AGAIN:
            self._commit(fail=False)
        elif step is Reconcile.ABORT_AGAIN:
            self._drop(fail=False)
        if self.resource.staged:
            assert self.row is not None and self.row.status is RecordState.PREPARED, (
                f"the resource holds the work, the log says {self.row}"
            )

    # -- the promises ------------------------------------------------------------------------

    @invariant()
    def committed_never_becomes_aborted_nor_the_other_way(self) -> None:
        assert not (self.resource.committed and self.promise_dropped), "the work was both committed and dropped"
        assert len(self.reported) <= 1, f"the participant reported {sorted(self.reported)}"

    @invariant()
    def a_promised_branch_never_changes_its_outcome(self) -> None:
        assert len(self.row_outcomes) <= 1, f"the branch's row went through {sorted(self.row_outcomes)}"

    @invariant()
    def nothing_is_committed_without_the_coordinator_except_a_heuristic(self) -> None:
        if self.resource.committed:
            assert self.decision is Outcome.COMMITTED or self.one_phase_sent or self.forced is Outcome.COMMITTED, (
                f"committed on {self.event} without the coordinator's word"
            )

    @invariant()
    def a_promised_branch_is_aborted_only_on_the_coordinators_word_or_a_heuristic(self) -> None:
        if self.promise_dropped:
            assert self.decision is Outcome.ABORTED or self.forced is Outcome.ABORTED, (
                f"a branch that promised YES was dropped on {self.event} on its own"
            )

    @invariant()
    def a_heuristic_outcome_stays_recorded(self) -> None:
        if self.forced is not None:
            assert self.row is not None and self.row.heuristic and rules.status(self.row).heuristic
            assert self.row.status.value == self.forced.value, f"the forced {self.forced} became {self.row.status}"

    @invariant()
    def only_an_operator_makes_an_outcome_heuristic(self) -> None:
        if self.row is not None and self.row.heuristic:
            assert self.forced is not None, "a heuristic outcome nobody forced"


BranchMachine.TestCase.settings = settings(
    max_examples=500,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_branch_machine = BranchMachine.TestCase
