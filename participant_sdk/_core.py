"""The participant protocol's semantics, apart from HTTP.

Every call is keyed by ``(gtid, branch)`` and answers as the first call for that key
did: the answer comes from the participant log when there is a row, and calls for
one key are serialised by a per-branch lock so concurrent duplicates cannot both
reach the resource.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import orjson
import structlog
from pydantic import TypeAdapter, ValidationError

from participant_sdk._locks import KeyedLocks
from participant_sdk.errors import ParticipantError, error_body
from participant_sdk.log import BranchRecord, ParticipantLog, RecordState
from participant_sdk.resource import PrepareResult, Resource
from twopc_core import failpoints
from twopc_core.failpoints import FailpointError
from twopc_core.protocol import (
    AbortRequest,
    BatchOp,
    BranchStatus,
    CommitRequest,
    Outcome,
    OutcomeResponse,
    PrepareRequest,
    PrepareResponse,
    StatusRequest,
    StatusResponse,
    Vote,
)

__all__ = ["BranchHandler", "describe_validation_error", "payload_hash"]

logger = structlog.get_logger("participant_sdk")

_BATCH_OP: TypeAdapter[Any] = TypeAdapter(BatchOp)
#: How many branches of one batch are worked on at once.
_BATCH_CONCURRENCY = 64
_MAX_REASON = 500

_STATUS_OF = {
    RecordState.PREPARED: BranchStatus.PREPARED,
    RecordState.COMMITTED: BranchStatus.COMMITTED,
    RecordState.ABORTED: BranchStatus.ABORTED,
    # A read-only branch has nothing to undo and nothing left to apply: as good as committed.
    RecordState.READ_ONLY: BranchStatus.COMMITTED,
}


def payload_hash(payload: Any) -> str | None:
    """A stable digest of a payload, to notice a repeated call that carries other work."""
    if payload is None:
        return None
    try:
        data = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # integers past 64 bits, which orjson refuses
        data = repr(payload).encode()
    return hashlib.sha256(data).hexdigest()


def describe_validation_error(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False)[:5]:
        where = ".".join(str(part) for part in error["loc"]) or "body"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text[:_MAX_REASON]


_STATE_AFTER_VOTE = {
    Vote.YES: RecordState.PREPARED,
    Vote.READ_ONLY: RecordState.READ_ONLY,
    Vote.NO: RecordState.ABORTED,
}


class BranchHandler:
    def __init__(self, resource: Resource, log: ParticipantLog) -> None:
        self.resource = resource
        self.log = log
        self.locks = KeyedLocks()

    # -- prepare -------------------------------------------------------------------

    async def prepare(self, req: PrepareRequest) -> PrepareResponse:
        gtid, branch = req.gtid, req.branch
        digest = payload_hash(req.payload)
        async with self.locks.hold((gtid, branch)):
            row = await self.log.lookup(gtid, branch, req.deadline)
            if row is not None:
                return self._repeat_prepare(row, digest)
            return await self._prepare_new(gtid, branch, req.payload, digest, req.deadline)

    async def _prepare_new(
        self, gtid: str, branch: str, payload: Any, digest: str | None, deadline: float | None
    ) -> PrepareResponse:
        """Prepare a branch this log has never seen; the caller holds its lock."""
        try:
            result = await self.resource.prepare(gtid, branch, payload)
        except Exception as exc:
            result = PrepareResult(Vote.NO, _describe(exc))
        if result.vote is Vote.YES:
            try:
                await self._log_vote(gtid, branch, Vote.YES, None, digest, deadline)
            except Exception as exc:
                # A YES not on disk would not survive a restart: take it back.
                logger.error("participant log write failed", gtid=gtid, branch=branch, error=repr(exc))
                result = PrepareResult(Vote.NO, "participant log write failed")
            else:
                await failpoints.hit("participant.after_prepare_before_reply")
                return PrepareResponse(vote=Vote.YES)
        if result.vote is Vote.READ_ONLY:
            await self._log_vote(gtid, branch, Vote.READ_ONLY, result.reason, digest, deadline)
            return PrepareResponse(vote=Vote.READ_ONLY, reason=result.reason)
        reason = result.reason or "resource voted no"
        await self._drop_quietly(gtid, branch)
        await self._log_vote(gtid, branch, Vote.NO, reason, digest, deadline)
        return PrepareResponse(vote=Vote.NO, reason=reason)

    async def _log_vote(
        self, gtid: str, branch: str, vote: Vote, reason: str | None, digest: str | None, deadline: float | None
    ) -> None:
        """Log a vote with the digest of its work and its transaction's deadline.

        A YES is written durably: only then may it leave this participant. A NO or a
        READ_ONLY staged nothing, so nothing is lost with its row: a lazy write will do.
        """
        await self.log.record(
            gtid,
            branch,
            _STATE_AFTER_VOTE[vote],
            durable=vote is Vote.YES,
            vote=vote,
            reason=reason,
            payload_hash=digest,
            deadline=deadline,
        )

    def _repeat_prepare(self, row: BranchRecord, digest: str | None) -> PrepareResponse:
        self._check_same_payload(row, digest)
        if row.status is RecordState.READ_ONLY:
            return PrepareResponse(vote=Vote.READ_ONLY, reason=row.reason)
        if row.status is RecordState.ABORTED:
            reason = row.reason if row.vote is Vote.NO and row.reason else "already aborted"
            return PrepareResponse(vote=Vote.NO, reason=reason)
        return PrepareResponse(vote=Vote.YES)

    @staticmethod
    def _check_same_payload(row: BranchRecord, digest: str | None) -> None:
        # Only rows written by a prepare carry the digest of their work; an abort of an
        # unknown branch, for one, has no payload to compare with.
        if row.vote is not None and row.payload_hash != digest:
            raise ParticipantError(
                409,
                "payload_mismatch",
                f"branch {row.branch} of {row.gtid} was already prepared with another payload",
                {"gtid": row.gtid, "branch": row.branch},
            )

    # -- commit --------------------------------------------------------------------

    async def commit(self, req: CommitRequest) -> OutcomeResponse:
        if req.one_phase:
            return await self._commit_one_phase(req)
        gtid, branch = req.gtid, req.branch
        async with self.locks.hold((gtid, branch)):
            row = await self.log.lookup(gtid, branch)
            if row is None:
                raise ParticipantError(
                    409,
                    "not_prepared",
                    f"branch {branch} of {gtid} is not prepared here",
                    {"gtid": gtid, "branch": branch},
                )
            if row.status is not RecordState.PREPARED:
                return self._outcome_of(row)
            await self._apply(row, Outcome.COMMITTED)
        await failpoints.hit("participant.after_commit_before_reply")
        return OutcomeResponse(status=Outcome.COMMITTED)

    async def _commit_one_phase(self, req: CommitRequest) -> OutcomeResponse:
        """Prepare and commit a branch that is its transaction's only one.

        It goes through the prepared state, logged durably, rather than straight to a
        local commit: a crash between the resource's commit and its log row would
        otherwise leave nothing here that says the work was done, and a recovering
        coordinator asking ``status`` would hear ``unknown`` and abort it. Prepared, the
        branch is in doubt after a crash and the coordinator settles it with COMMIT.
        """
        gtid, branch = req.gtid, req.branch
        digest = payload_hash(req.payload)
        async with self.locks.hold((gtid, branch)):
            # Reads the disk only without a live deadline (a retry after it, an old caller).
            row = await self.log.lookup(gtid, branch, req.deadline)
            if row is not None:
                self._check_same_payload(row, digest)
            else:
                vote = await self._prepare_new(gtid, branch, req.payload, digest, req.deadline)
                if vote.vote is Vote.NO:
                    return OutcomeResponse(status=Outcome.ABORTED, reason=vote.reason)
                if vote.vote is Vote.READ_ONLY:
                    return OutcomeResponse(status=Outcome.COMMITTED, reason=vote.reason)
                row = self.log.get(gtid, branch)
                assert row is not None
            if row.status is not RecordState.PREPARED:
                return self._outcome_of(row)
            await self._apply(row, Outcome.COMMITTED)
        await failpoints.hit("participant.after_commit_before_reply")
        return OutcomeResponse(status=Outcome.COMMITTED)

    @staticmethod
    def _outcome_of(row: BranchRecord) -> OutcomeResponse:
        if row.status is RecordState.ABORTED:
            return OutcomeResponse(status=Outcome.ABORTED, reason=row.reason)
        reason = row.reason if row.heuristic else None
        return OutcomeResponse(status=Outcome.COMMITTED, reason=reason)

    # -- abort ---------------------------------------------------------------------

    async def abort(self, req: AbortRequest) -> OutcomeResponse:
        gtid, branch = req.gtid, req.branch
        async with self.locks.hold((gtid, branch)):
            row = await self.log.lookup(gtid, branch)
            if row is not None and row.status is RecordState.COMMITTED:
                raise ParticipantError(
                    409,
                    "already_committed",
                    f"branch {branch} of {gtid} is already committed",
                    {"gtid": gtid, "branch": branch, "heuristic": row.heuristic},
                )
            if row is not None and row.status is RecordState.ABORTED:
                return OutcomeResponse(status=Outcome.ABORTED)
            if row is not None and row.status is RecordState.PREPARED:
                await self._apply(row, Outcome.ABORTED)
            else:
                # Remember the abort of a branch never prepared here (or read-only), so
                # that a prepare arriving late votes no.
                await self.log.record(gtid, branch, RecordState.ABORTED, durable=False)
        return OutcomeResponse(status=Outcome.ABORTED)

    # -- status --------------------------------------------------------------------

    async def status(self, req: StatusRequest) -> StatusResponse:
        row = await self.log.lookup(req.gtid, req.branch)
        if row is None:
            return StatusResponse(status=BranchStatus.UNKNOWN)
        return StatusResponse(status=_STATUS_OF[row.status], heuristic=row.heuristic)

    # -- batch ---------------------------------------------------------------------

    async def batch(
        self, ops: Sequence[Any], on_result: Callable[[int, dict[str, Any]], None] | None = None
    ) -> list[dict[str, Any]]:
        """Answer each op as if sent alone, in order. Ops on one branch run one after
        another in the order given; different branches run concurrently.

        ``on_result(index, result)`` hears each answer as soon as it is known, so a
        caller can pass it on before slower ops of the batch are done.
        """
        results: list[dict[str, Any]] = [{} for _ in ops]

        def settle(index: int, result: dict[str, Any]) -> None:
            results[index] = result
            if on_result is not None:
                on_result(index, result)

        parsed: dict[int, Any] = {}
        chains: dict[tuple[str, str], list[int]] = {}
        for index, raw in enumerate(ops):
            try:
                op = _BATCH_OP.validate_python(raw)
            except ValidationError as exc:
                settle(
                    index,
                    error_body(
                        "invalid_request",
                        f"invalid op: {describe_validation_error(exc)}",
                        exc.errors(include_url=False, include_context=False, include_input=False),
                    ),
                )
                continue
            parsed[index] = op
            chains.setdefault((op.gtid, op.branch), []).append(index)

        limit = asyncio.Semaphore(_BATCH_CONCURRENCY)

        async def run_chain(indexes: list[int]) -> None:
            async with limit:
                for index in indexes:
                    settle(index, await self._one(parsed[index]))

        if len(chains) == 1:
            await run_chain(next(iter(chains.values())))
        elif chains:
            await asyncio.gather(*(run_chain(indexes) for indexes in chains.values()))
        return results

    async def _one(self, op: Any) -> dict[str, Any]:
        try:
            if op.op == "prepare":
                response: Any = await self.prepare(op)
            elif op.op == "commit":
                response = await self.commit(op)
            elif op.op == "abort":
                response = await self.abort(op)
            else:
                response = await self.status(op)
        except ParticipantError as exc:
            return exc.body()
        except FailpointError as exc:
            return error_body("failpoint", str(exc))
        except Exception as exc:
            logger.exception("batch op failed", op=op.op, gtid=op.gtid, branch=op.branch)
            return error_body("internal_error", _describe(exc))
        return response.model_dump(mode="json")

    # -- outcomes learnt elsewhere (in-doubt inquiry, operator) ---------------------

    async def resolve(self, gtid: str, branch: str, outcome: Outcome, *, heuristic: bool = False) -> bool:
        """Apply ``outcome`` to a branch still prepared; False if it no longer is."""
        async with self.locks.hold((gtid, branch)):
            row = self.log.get(gtid, branch)
            if row is None or row.status is not RecordState.PREPARED:
                return False
            await self._apply(row, outcome, heuristic=heuristic)
            return True

    async def _apply(self, row: BranchRecord, outcome: Outcome, *, heuristic: bool = False) -> None:
        """Commit or abort a prepared branch at the resource, then log it.

        The log write is lazy: the resource's commit and abort are idempotent, and
        until the row is on disk the branch still reads as prepared, so a restart
        asks the coordinator again and re-applies the same outcome.
        """
        gtid, branch = row.gtid, row.branch
        extra: dict[str, Any] = {}
        if heuristic:
            extra = {"heuristic": True, "reason": f"heuristic {outcome.value} by operator"}
        if outcome is Outcome.COMMITTED:
            await failpoints.hit("participant.before_commit_applied")
            try:
                await self.resource.commit(gtid, branch)
            except Exception as exc:
                raise ParticipantError(503, "resource_error", f"commit failed: {_describe(exc)}") from exc
            await self.log.record(gtid, branch, RecordState.COMMITTED, durable=heuristic, **extra)
        else:
            try:
                await self.resource.abort(gtid, branch)
            except Exception as exc:
                raise ParticipantError(503, "resource_error", f"abort failed: {_describe(exc)}") from exc
            await self.log.record(gtid, branch, RecordState.ABORTED, durable=heuristic, **extra)

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
        branch is prepared and logged as voted YES (durably, before anyone hears it)."""
        async with self.locks.hold((gtid, branch)):
            row = await self.log.lookup(gtid, branch)
            if row is not None:
                raise ParticipantError(
                    409,
                    "branch_exists",
                    f"branch {branch} of {gtid} is already {row.status.value} here",
                    {"gtid": gtid, "branch": branch, "status": row.status.value},
                )
            async with self.resource.branch(gtid, branch) as handle:
                yield handle
            try:
                await self._log_vote(gtid, branch, Vote.YES, None, None, None)
            except Exception as exc:
                # Nobody has heard of this YES yet: taking it back is still allowed.
                await self._drop_quietly(gtid, branch)
                raise ParticipantError(503, "log_error", f"participant log write failed: {_describe(exc)}") from exc

    # -- start-up and sweeps -----------------------------------------------------------

    async def reconcile(self) -> int:
        """Line the log up with what the resource holds prepared; return how many
        branches were found that the log did not know.

        A branch the resource holds but the log does not know was staged before a
        crash took the YES off the wire: log it prepared so the in-doubt loop asks
        the coordinator. A branch the log finished but the resource still holds gets
        the logged outcome again. Runs at start and then periodically, so each branch
        is looked at under its lock: a prepare in flight is never mistaken for one
        that was lost.
        """
        found = 0
        for gtid, branch in await self.resource.recover():
            async with self.locks.hold((gtid, branch)):
                row = await self.log.lookup(gtid, branch)
                if row is None:
                    found += 1
                    await self.log.record(
                        gtid,
                        branch,
                        RecordState.PREPARED,
                        durable=True,
                        reason="found prepared in the resource",
                    )
                elif row.status is RecordState.COMMITTED:
                    await self.resource.commit(gtid, branch)
                elif row.status is not RecordState.PREPARED:
                    await self.resource.abort(gtid, branch)
        return found
