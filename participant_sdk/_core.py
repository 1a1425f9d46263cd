"""The participant protocol's driver: it carries out what the branch rules decide.

Every call is keyed by ``(gtid, branch)``. The rules (:mod:`participant_sdk._branch`)
decide from the branch's log row what is to be done; this driver does it — the
resource's calls, the log's writes (durable or lazy, as the rules say), the failpoints
at the steps that matter — with the calls for one key serialised by a per-branch lock,
so concurrent duplicates cannot both reach the resource. It speaks no HTTP: a refusal
is one of the domain errors of :mod:`participant_sdk.errors`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import structlog

from participant_sdk import _branch as rules
from participant_sdk._branch import Apply, LogVote, PrepareAtResource, Reconcile
from participant_sdk._locks import KeyedLocks
from participant_sdk._metrics import ParticipantMetrics
from participant_sdk.errors import ParticipantError
from participant_sdk.log import BranchRecord, ParticipantLog, RecordState
from participant_sdk.resource import PrepareResult, Resource
from twopc_core import failpoints
from twopc_core.failpoints import FailpointError
from twopc_core.protocol import (
    AbortRequest,
    BatchOp,
    CommitRequest,
    ForceRequest,
    Outcome,
    OutcomeResponse,
    PrepareRequest,
    PrepareResponse,
    StatusRequest,
    StatusResponse,
)

__all__ = ["BatchResult", "BranchAnswer", "BranchHandler"]

logger = structlog.get_logger("participant_sdk")

#: How many branches of one batch are worked on at once.
_BATCH_CONCURRENCY = 64

#: What a protocol call answers.
BranchAnswer = PrepareResponse | OutcomeResponse | StatusResponse
#: What one op of a batch came to: its answer, or the exception it failed with.
BatchResult = BranchAnswer | Exception


class BranchHandler:
    """The protocol calls, the outcomes learnt elsewhere, early branches and
    reconciliation, for every branch of one resource and its log."""

    def __init__(self, resource: Resource, log: ParticipantLog, metrics: ParticipantMetrics | None = None) -> None:
        self.resource = resource
        self.log = log
        self.locks = KeyedLocks()
        self.metrics = metrics if metrics is not None else ParticipantMetrics("", enabled=False)
        #: The resource keeps its branches' state: votes are durable there, not in the log.
        self.held_by_resource = resource.holds_branch_state

    async def _row(self, gtid: str, branch: str, deadline: float | None = None) -> BranchRecord | None:
        """The branch's row from the log; for a resource that holds its branches' state,
        from the resource when the log has none and the transaction is not live (a row
        written lazily and lost in a crash)."""
        row = await self.log.lookup(gtid, branch, deadline)
        if row is None and self.held_by_resource and not self.log.live(deadline):
            status = await self.resource.branch_status(gtid, branch)
            row = rules.row_from_resource(gtid, branch, status, self.log.now())
            if row is not None:
                self.log.cache(row)
        return row

    # -- prepare -------------------------------------------------------------------

    async def prepare(self, req: PrepareRequest) -> PrepareResponse:
        started = time.perf_counter()
        answer = await self._prepare(req)
        self.metrics.prepare_seconds.observe(time.perf_counter() - started)
        return answer

    async def _prepare(self, req: PrepareRequest) -> PrepareResponse:
        gtid, branch = req.gtid, req.branch
        digest = rules.payload_hash(req.payload)
        async with self.locks.hold((gtid, branch)):
            step = rules.prepare(await self._row(gtid, branch, req.deadline), digest)
            if isinstance(step, PrepareResponse):
                return step
            return await self._prepare_new(gtid, branch, req.payload, digest, req.deadline)

    async def _prepare_new(
        self, gtid: str, branch: str, payload: Any, digest: str | None, deadline: float | None
    ) -> PrepareResponse:
        """Prepare a branch this log has never seen; the caller holds its lock."""
        try:
            vote = await self.resource.prepare(gtid, branch, payload)
        except Exception as exc:
            vote = rules.failed_prepare(exc)
        vote = rules.counted_vote(vote)
        self.metrics.votes[vote.vote.value] += 1
        step = rules.log_of_vote(vote.vote, self.held_by_resource)
        if step.durable:
            try:
                await self._log_vote(gtid, branch, step, vote, digest, deadline)
            except Exception as exc:
                logger.error("participant log write failed", gtid=gtid, branch=branch, error=repr(exc))
                vote = rules.yes_not_logged()
                step = rules.log_of_vote(vote.vote)
            else:
                await failpoints.hit("participant.after_prepare_before_reply")
                return rules.vote_answer(vote)
        if step.drop_staged:
            await self._drop_quietly(gtid, branch)
        await self._log_vote(gtid, branch, step, vote, digest, deadline)
        if step.state is RecordState.PREPARED:  # a YES durable at the resource, which holds the branch's state
            await failpoints.hit("participant.after_prepare_before_reply")
        return rules.vote_answer(vote)

    async def _log_vote(
        self, gtid: str, branch: str, step: LogVote, vote: PrepareResult, digest: str | None, deadline: float | None
    ) -> None:
        """Log a vote with the digest of its work and its transaction's deadline."""
        await self.log.record(
            gtid,
            branch,
            step.state,
            durable=step.durable,
            vote=step.vote,
            reason=vote.reason,
            payload_hash=digest,
            deadline=deadline,
        )

    # -- commit --------------------------------------------------------------------

    async def commit(self, req: CommitRequest) -> OutcomeResponse:
        started = time.perf_counter()
        answer = await (self._commit_one_phase(req) if req.one_phase else self._commit(req))
        self.metrics.phase_two_seconds[Outcome.COMMITTED].observe(time.perf_counter() - started)
        return answer

    async def _commit(self, req: CommitRequest) -> OutcomeResponse:
        gtid, branch = req.gtid, req.branch
        async with self.locks.hold((gtid, branch)):
            step = rules.commit(await self._row(gtid, branch), gtid, branch)
            if isinstance(step, OutcomeResponse):
                return step
            await self._apply(gtid, branch, step)
        await failpoints.hit("participant.after_commit_before_reply")
        return step.answer

    async def _commit_one_phase(self, req: CommitRequest) -> OutcomeResponse:
        """Prepare and commit a branch that is its transaction's only one, through a
        durably logged prepare (see :func:`participant_sdk._branch.commit_one_phase`)."""
        gtid, branch = req.gtid, req.branch
        digest = rules.payload_hash(req.payload)
        async with self.locks.hold((gtid, branch)):
            # Reads the disk only without a live deadline (a retry after it, an old caller).
            step = rules.commit_one_phase(await self._row(gtid, branch, req.deadline), digest)
            if isinstance(step, PrepareAtResource):
                step = rules.one_phase_voted(await self._prepare_new(gtid, branch, req.payload, digest, req.deadline))
            if isinstance(step, OutcomeResponse):
                return step
            await self._apply(gtid, branch, step)
        await failpoints.hit("participant.after_commit_before_reply")
        return step.answer

    # -- abort ---------------------------------------------------------------------

    async def abort(self, req: AbortRequest) -> OutcomeResponse:
        started = time.perf_counter()
        answer = await self._abort(req)
        self.metrics.phase_two_seconds[Outcome.ABORTED].observe(time.perf_counter() - started)
        return answer

    async def _abort(self, req: AbortRequest) -> OutcomeResponse:
        gtid, branch = req.gtid, req.branch
        async with self.locks.hold((gtid, branch)):
            step = rules.abort(await self._row(gtid, branch), gtid, branch)
            if isinstance(step, OutcomeResponse):
                return step
            if isinstance(step, Apply):
                await self._apply(gtid, branch, step)
            else:
                await self.log.record(gtid, branch, step.state, durable=False)
        return step.answer

    # -- status --------------------------------------------------------------------

    async def status(self, req: StatusRequest) -> StatusResponse:
        return rules.status(await self._row(req.gtid, req.branch))

    # -- batch ---------------------------------------------------------------------

    async def batch(
        self,
        ops: Sequence[BatchOp],
        on_result: Callable[[int, BatchResult], None],
        run_op: Callable[[BatchOp], Awaitable[BatchResult]] | None = None,
    ) -> None:
        """Answer each op as if sent alone. Ops on one branch run one after another in
        the order given; different branches run concurrently.

        ``on_result(index, result)`` hears each op's answer (or the exception it
        failed with) as soon as it is known, so a caller can pass it on before slower
        ops of the batch are done. ``run_op`` runs each op in the caller's stead (a
        span around :meth:`run_op`, say).
        """
        run = run_op or self.run_op
        chains: dict[tuple[str, str], list[int]] = {}
        for index, op in enumerate(ops):
            chains.setdefault((op.gtid, op.branch), []).append(index)
        limit = asyncio.Semaphore(_BATCH_CONCURRENCY)

        async def run_chain(indexes: list[int]) -> None:
            async with limit:
                for index in indexes:
                    on_result(index, await run(ops[index]))

        if len(chains) == 1:
            await run_chain(next(iter(chains.values())))
        elif chains:
            await asyncio.gather(*(run_chain(indexes) for indexes in chains.values()))

    async def run_op(self, op: BatchOp) -> BatchResult:
        """One op of a batch: its answer, or the exception it failed with."""
        try:
            if isinstance(op, PrepareRequest):
                return await self.prepare(op)
            if isinstance(op, CommitRequest):
                return await self.commit(op)
            if isinstance(op, AbortRequest):
                return await self.abort(op)
            return await self.status(op)
        except (ParticipantError, FailpointError) as exc:
            return exc
        except Exception as exc:
            logger.exception("batch op failed", op=op.op, gtid=op.gtid, branch=op.branch)
            return exc

    # -- outcomes learnt elsewhere (in-doubt inquiry, refused enlistment, operator) ---

    async def resolve(self, gtid: str, branch: str, outcome: Outcome) -> bool:
        """Apply the coordinator's ``outcome`` to a branch still prepared; False if it
        no longer is."""
        async with self.locks.hold((gtid, branch)):
            step = rules.resolve(self.log.get(gtid, branch), outcome)
            if step is None:
                return False
            await self._apply(gtid, branch, step)
            return True

    async def force(self, gtid: str, branch: str, outcome: Outcome, reason: str | None = None) -> None:
        """Apply an operator's heuristic ``outcome`` to an in-doubt branch and record it.

        Raises :class:`~participant_sdk.errors.NotInDoubt` for a branch not prepared here.
        """
        async with self.locks.hold((gtid, branch)):
            await self._apply(gtid, branch, rules.force(self.log.get(gtid, branch), outcome, gtid, branch))
        logger.warning("heuristic outcome forced", gtid=gtid, branch=branch, outcome=outcome.value, why=reason)

    async def force_request(self, req: ForceRequest) -> StatusResponse:
        """``POST {base}/force``: :meth:`force`, answered with the branch's status after it."""
        await self.force(req.gtid, req.branch, req.outcome, req.reason)
        return rules.status(await self.log.lookup(req.gtid, req.branch))

    async def _apply(self, gtid: str, branch: str, step: Apply) -> None:
        """Commit or abort a prepared branch at the resource, then log it as ``step`` says."""
        if step.outcome is Outcome.COMMITTED:
            await failpoints.hit("participant.before_commit_applied")
            try:
                await self.resource.commit(gtid, branch)
            except Exception as exc:
                raise rules.resource_failed(step.outcome, gtid, branch, exc) from exc
        else:
            try:
                await self.resource.abort(gtid, branch)
            except Exception as exc:
                raise rules.resource_failed(step.outcome, gtid, branch, exc) from exc
        if step.heuristic:
            await self.log.record(gtid, branch, step.state, durable=step.durable, heuristic=True, reason=step.reason)
            self.metrics.forced += 1
        else:
            await self.log.record(gtid, branch, step.state, durable=step.durable)
        self.metrics.outcomes[step.outcome.value] += 1

    async def _drop_quietly(self, gtid: str, branch: str) -> None:
        """Drop whatever a failed prepare may have staged; the resource's problem is
        already the reason of the NO vote, so a failure here is only logged."""
        try:
            await self.resource.abort(gtid, branch)
        except Exception as exc:
            logger.warning("abort after a no vote failed", gtid=gtid, branch=branch, error=repr(exc))

    # -- early prepare ---------------------------------------------------------------

    @asynccontextmanager
    async def early_branch(self, gtid: str, branch: str) -> AsyncIterator[Any]:
        """The application's work inside the resource's branch; on a clean exit the
        branch is prepared and logged as voted YES (durably, before anyone hears it).

        Raises :class:`~participant_sdk.errors.BranchExists` for a branch the log knows,
        and :class:`~participant_sdk.errors.LogWriteFailed` (the work dropped) if the YES
        cannot be logged.
        """
        async with self.locks.hold((gtid, branch)):
            step = rules.early_branch(await self.log.lookup(gtid, branch), gtid, branch, self.held_by_resource)
            async with self.resource.branch(gtid, branch) as handle:
                yield handle
            try:
                await self.log.record(gtid, branch, step.state, durable=step.durable, vote=step.vote)
            except Exception as exc:
                await self._drop_quietly(gtid, branch)
                raise rules.early_yes_not_logged(gtid, branch, exc) from exc

    # -- start-up and sweeps -----------------------------------------------------------

    async def reconcile(self) -> int:
        """Line the log up with what the resource holds prepared (see
        :func:`participant_sdk._branch.reconcile`); return how many branches were found
        that the log did not know.

        Runs at start and then periodically, so each branch is looked at under its
        lock: a prepare in flight is never mistaken for one that was lost.
        """
        found = 0
        for gtid, branch in await self.resource.recover():
            async with self.locks.hold((gtid, branch)):
                step = rules.reconcile(await self.log.lookup(gtid, branch))
                if step is Reconcile.ADOPT:
                    found += 1
                    durable = not self.held_by_resource  # else the resource's listing is the record
                    reason = rules.ADOPTED_REASON
                    await self.log.record(gtid, branch, RecordState.PREPARED, durable=durable, reason=reason)
                elif step is Reconcile.COMMIT_AGAIN:
                    await self.resource.commit(gtid, branch)
                elif step is Reconcile.ABORT_AGAIN:
                    await self.resource.abort(gtid, branch)
        return found
