"""Recovery at start-up: what becomes of each unfinished transaction the log holds.

- A COMMIT decision: phase 2 resumes (the engine takes the transaction back in memory).
- A one-phase transaction with no outcome: its only participant knows, so ask it
  (``status``): committed stays committed; prepared is committed now (nothing was
  decided, and the branch is the whole transaction); anything else is aborted, and the
  abort fences a late commit.
- Anything else is undecided: presumed abort. Branches that may hold prepared work are
  told once; one that misses it asks later and hears "aborted".
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from coordinator.engine._machine import BranchState, TxState
from coordinator.log import BranchRecord, DecisionLog, TransactionRecord
from coordinator.transport import Backoff, CallFailed, Transport
from twopc_core.protocol import BranchStatus, Outcome

__all__ = ["Recovery", "ended"]

log = structlog.get_logger(__name__)

Spawn = Callable[[Coroutine[Any, Any, None], str], None]


class Recovery:
    def __init__(
        self,
        log_store: DecisionLog,
        transport: Transport,
        backoff: Backoff,
        clock: Callable[[], float],
        resume_commit: Callable[[TransactionRecord], None],
        spawn: Spawn,
    ) -> None:
        self._log = log_store
        self._transport = transport
        self._backoff = backoff
        self._clock = clock
        self._resume_commit = resume_commit
        self._spawn = spawn
        self.count = 0

    def recover(self, record: TransactionRecord) -> None:
        """Schedule what ``record`` needs; returns at once."""
        self.count += 1
        if record.decision == Outcome.COMMITTED:
            log.info("recovery: resuming phase 2", gtid=record.gtid)
            self._resume_commit(record)
        elif record.one_phase and record.decision is None:
            log.info("recovery: asking the single branch", gtid=record.gtid)
            self._spawn(self._settle_one_phase(record), f"recover {record.gtid}")
        else:
            holders = [
                b.name
                for b in record.branches
                if b.state == BranchState.PREPARED
                or (b.state == BranchState.ENLISTED and record.state != TxState.ACTIVE)
            ]
            log.info("recovery: aborting undecided transaction", gtid=record.gtid, branches=holders)
            self._log.save(ended(record, Outcome.ABORTED, self._clock(), "coordinator restarted before a decision"))
            for name in holders:
                self._spawn(self._tell_abort(record.gtid, name), f"abort {record.gtid}")

    async def _settle_one_phase(self, record: TransactionRecord) -> None:
        (branch,) = record.branches
        attempt = 0
        while True:
            try:
                status = await self._transport.status(branch.name, record.gtid)
                if status is BranchStatus.COMMITTED:
                    outcome = Outcome.COMMITTED
                elif status is BranchStatus.PREPARED:
                    outcome = await self._transport.deliver(branch.name, record.gtid, Outcome.COMMITTED)
                else:
                    outcome = await self._transport.deliver(branch.name, record.gtid, Outcome.ABORTED)
                break
            except CallFailed as exc:
                log.warning("recovery: branch unreachable", gtid=record.gtid, error=str(exc))
                await asyncio.sleep(self._backoff.delay(attempt))
                attempt += 1
        await self._log.force(ended(record, outcome, self._clock(), None))

    async def _tell_abort(self, gtid: str, name: str) -> None:
        for attempt in range(5):
            try:
                await asyncio.wait_for(self._transport.deliver(name, gtid, Outcome.ABORTED), 10)
                return
            except (TimeoutError, CallFailed):
                await asyncio.sleep(self._backoff.delay(attempt))


def ended(record: TransactionRecord, outcome: Outcome, now: float, reason: str | None) -> TransactionRecord:
    """``record`` finished with ``outcome``: every branch but a read-only one took it."""
    final = BranchState.COMMITTED if outcome is Outcome.COMMITTED else BranchState.ABORTED
    return TransactionRecord(
        gtid=record.gtid,
        state=TxState.COMMITTED if outcome is Outcome.COMMITTED else TxState.ABORTED,
        decision=outcome,
        reason=record.reason or reason,
        one_phase=record.one_phase,
        commit_requested=record.commit_requested,
        finished=True,
        created_at=record.created_at,
        updated_at=now,
        deadline=record.deadline,
        metadata=record.metadata,
        idempotency_key=record.idempotency_key,
        request_hash=record.request_hash,
        branches=tuple(
            BranchRecord(b.name, final if b.state != BranchState.READ_ONLY else b.state, b.early, b.reason)
            for b in record.branches
        ),
    )
