"""The thin async code that runs each transaction's state machine.

Active transactions live in memory: the hot path reads nothing from the log. The
driver feeds the machine what happens (votes, the durable decision, acknowledgements)
and carries out the actions it returns. Protocol rounds run in tasks of their own, so
a client that hangs up never stops a commit half-way.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from opentelemetry import trace

from coordinator.config import ParticipantSettings, TransactionSettings
from coordinator.engine._ids import new_gtid
from coordinator.engine._machine import (
    Action,
    BranchState,
    Finish,
    ForceDecision,
    SendAbort,
    SendCommit,
    SendOnePhase,
    SendPrepare,
    Transaction,
    TxState,
    WrongState,
)
from coordinator.log import BranchRecord, DecisionLog, IdempotencyEntry, TransactionRecord
from coordinator.recovery import Recovery
from coordinator.transport import Backoff, Transport
from twopc_core import failpoints
from twopc_core.protocol import Outcome

__all__ = [
    "Coordinator",
    "IdempotencyMismatch",
    "NotFound",
    "UnknownParticipantError",
]

log = structlog.get_logger(__name__)
tracer = trace.get_tracer(__name__)

#: How many finished transactions stay answerable from memory.
_FINISHED_IN_MEMORY = 10_000


class NotFound(LookupError):
    pass


class UnknownParticipantError(ValueError):
    pass


class IdempotencyMismatch(ValueError):
    """An Idempotency-Key was reused for a different request."""


@dataclass
class _Entry:
    """An in-memory transaction: the machine plus what the driver keeps around it."""

    tx: Transaction
    created_at: float
    deadline: float
    metadata: dict[str, Any]
    idempotency_key: str | None = None
    request_hash: str | None = None
    updated_at: float = 0.0
    decided: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    #: The record written when every branch acknowledged; it changes no more.
    final_record: TransactionRecord | None = None

    def record(self, state: TxState | None = None, decision: Outcome | None = None) -> TransactionRecord:
        tx = self.tx
        state = state or tx.state
        decision = decision or tx.decision
        return TransactionRecord(
            gtid=tx.gtid,
            state=state.value,
            decision=decision.value if decision else None,
            reason=tx.reason,
            one_phase=tx.one_phase,
            commit_requested=tx.commit_requested,
            finished=state.final,
            created_at=self.created_at,
            updated_at=self.updated_at,
            deadline=self.deadline,
            metadata=self.metadata,
            idempotency_key=self.idempotency_key,
            request_hash=self.request_hash,
            branches=tuple(BranchRecord(b.name, b.state.value, b.early, b.reason) for b in tx.branches.values()),
        )


@dataclass(frozen=True)
class TransactionView:
    """What the API shows of a transaction, from memory or from the log."""

    record: TransactionRecord
    pending: frozenset[str]


class Coordinator:
    """Begins, enlists, commits and aborts global transactions; recovers after a restart."""

    def __init__(
        self,
        node_id: str,
        log_store: DecisionLog,
        transport: Transport,
        settings: TransactionSettings,
        retention_seconds: float = 24 * 3600.0,
        prune_interval: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._retention = retention_seconds
        self._prune_interval = prune_interval
        self._node_id = node_id
        self._log = log_store
        self._transport = transport
        self._settings = settings
        self._clock = clock
        self._active: dict[str, _Entry] = {}
        #: Recently finished transactions, answered from memory while their END record
        #: (written lazily) reaches the log.
        self._finished: OrderedDict[str, TransactionRecord] = OrderedDict()
        self._idempotency: dict[str, IdempotencyEntry] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._backoff = Backoff(settings.retry_base_ms / 1000, settings.retry_cap_ms / 1000)
        self._recovery = Recovery(log_store, transport, self._backoff, clock, self._resume_commit, self._spawn)
        self.decisions_logged = 0

    # -- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        """Load what recovery needs and schedule it; returns before phase 2 completes."""
        now = self._clock()
        self._idempotency = await self._log.idempotency_keys(now - self._settings.idempotency_ttl_seconds)
        for record in await self._log.unfinished():
            self._recovery.recover(record)
        self._spawn(self._reap(), "reaper")

    async def close(self) -> None:
        tasks = list(self._background)
        for entry in self._active.values():
            tasks.extend(entry.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def recovered(self) -> int:
        """Unfinished transactions found in the log at start."""
        return self._recovery.count

    @property
    def active_count(self) -> int:
        return len(self._active)

    @property
    def participant_settings(self) -> list[ParticipantSettings]:
        return list(self._transport.participants.values())

    def participant_health(self, name: str) -> dict[str, Any]:
        return self._transport.health(name)

    # -- client operations ----------------------------------------------------------

    async def begin(
        self,
        timeout_ms: int | None = None,
        metadata: dict[str, Any] | None = None,
        participants: list[tuple[str, Any, bool]] = (),  # type: ignore[assignment]
        idempotency_key: str | None = None,
        request_hash: str | None = None,
        save: bool = True,
    ) -> tuple[TransactionView, bool]:
        """Start a transaction; returns its view and whether it was created now.

        ``save=False`` skips the lazy BEGIN record when a commit follows at once.
        """
        found, created = await self._begin(timeout_ms, metadata, participants, idempotency_key, request_hash, save)
        return (self._view(found) if isinstance(found, _Entry) else found), created

    async def _begin(
        self,
        timeout_ms: int | None,
        metadata: dict[str, Any] | None,
        participants: list[tuple[str, Any, bool]],
        idempotency_key: str | None,
        request_hash: str | None,
        save: bool,
    ) -> tuple[_Entry | TransactionView, bool]:
        """The new transaction's entry, or the view of the one its Idempotency-Key began."""
        if idempotency_key is not None:
            known = self._idempotency.get(idempotency_key)
            if known is not None:
                if known.request_hash != request_hash:
                    raise IdempotencyMismatch("Idempotency-Key was already used for a different request")
                with contextlib.suppress(NotFound):  # pruned meanwhile: begin afresh
                    return await self.get(known.gtid), False
        for name, _, _ in participants:
            self._check_participant(name)
        timeout = min(timeout_ms or self._settings.default_timeout_ms, self._settings.max_timeout_ms)
        now = self._clock()
        entry = _Entry(
            tx=Transaction(new_gtid(self._node_id, now)),
            created_at=now,
            updated_at=now,
            deadline=now + timeout / 1000,
            metadata=metadata or {},
            idempotency_key=idempotency_key,
            request_hash=request_hash,
        )
        for name, payload, prepared in participants:
            entry.tx.enlist(name, payload, prepared)
        self._active[entry.tx.gtid] = entry
        if idempotency_key is not None:
            self._idempotency[idempotency_key] = IdempotencyEntry(entry.tx.gtid, request_hash, now)
        if save:
            self._save(entry)
        return entry, True

    async def enlist(self, gtid: str, name: str, payload: Any = None, prepared: bool = False) -> TransactionView:
        self._check_participant(name)
        entry = await self._entry_or_raise(gtid)
        if entry.tx.enlist(name, payload, prepared):
            self._save(entry)
        return self._view(entry)

    async def commit(self, gtid: str, wait_for_phase_two: bool = True) -> TransactionView:
        entry = self._active.get(gtid)
        if entry is None:
            return await self._finished_view(gtid, wanted=Outcome.COMMITTED)
        async with entry.lock:
            actions = entry.tx.commit()
            if actions and not isinstance(actions[0], SendOnePhase):  # one-phase forces its own record
                self._save(entry)
            self._run(entry, actions)
        await entry.decided.wait()
        if wait_for_phase_two:
            await self._wait_for_phase_two(entry)
        return self._view(entry)

    async def _wait_for_phase_two(self, entry: _Entry) -> None:
        """Wait, within the configured bound, until every branch acknowledged phase 2."""
        if self._settings.commit_wait_ms > 0:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(entry.finished.wait(), self._settings.commit_wait_ms / 1000)

    async def abort(self, gtid: str, reason: str = "aborted by the client") -> TransactionView:
        entry = self._active.get(gtid)
        if entry is None:
            return await self._finished_view(gtid, wanted=Outcome.ABORTED)
        async with entry.lock:
            actions = entry.tx.abort(reason)
            if actions:
                self._save(entry)
                self._run(entry, actions)
        await self._wait_for_phase_two(entry)
        return self._view(entry)

    async def execute(
        self,
        participants: list[tuple[str, Any]],
        timeout_ms: int | None = None,
        metadata: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        request_hash: str | None = None,
        wait_for_phase_two: bool = True,
    ) -> TransactionView:
        """Begin, enlist and commit in one call."""
        found, _ = await self._begin(
            timeout_ms,
            metadata,
            [(name, payload, False) for name, payload in participants],
            idempotency_key,
            request_hash,
            save=False,
        )
        gtid = found.tx.gtid if isinstance(found, _Entry) else found.record.gtid
        return await self.commit(gtid, wait_for_phase_two)

    async def get(self, gtid: str) -> TransactionView:
        entry = self._active.get(gtid)
        if entry is not None:
            return self._view(entry)
        record = await self._lookup(gtid)
        if record is None:
            raise NotFound(gtid)
        return TransactionView(record, frozenset())

    async def list(self, state: str | None, limit: int, after: str | None) -> list[TransactionView]:
        await self._log.sync()
        views = []
        for record in await self._log.list(state, limit, after):
            entry = self._active.get(record.gtid)
            view = self._view(entry) if entry is not None else TransactionView(record, frozenset())
            if state is None or view.record.state == state:
                views.append(view)
        return views

    def log_stats(self) -> dict[str, float]:
        commits = self._log.stats.commits
        return {
            "log_commits": commits,
            "decisions_logged": self.decisions_logged,
            "decisions_per_log_commit": self.decisions_logged / commits if commits else 0.0,
            **self._transport.exchange_stats(),
        }

    # -- running the machine ------------------------------------------------------------

    def _run(self, entry: _Entry, actions: list[Action]) -> None:
        for action in actions:
            match action:
                case SendPrepare(branches):
                    for name in branches:
                        self._spawn_for(entry, self._prepare(entry, name))
                case SendOnePhase(name):
                    self._spawn_for(entry, self._one_phase(entry, name))
                case ForceDecision():
                    self._spawn_for(entry, self._force_decision(entry))
                case SendCommit(branches) | SendAbort(branches):
                    outcome = Outcome.COMMITTED if isinstance(action, SendCommit) else Outcome.ABORTED
                    for name in branches:
                        self._spawn_for(entry, self._deliver(entry, name, outcome))
                case Finish():
                    self._finish(entry)
        if entry.tx.decision is not None:
            entry.decided.set()

    async def _apply(self, entry: _Entry, event: Callable[[], list[Action]]) -> None:
        async with entry.lock:
            actions = event()
            entry.updated_at = self._clock()
            self._run(entry, actions)

    async def _prepare(self, entry: _Entry, name: str) -> None:
        branch = entry.tx.branches[name]
        timeout = max(0.001, min(self._settings.prepare_timeout_ms / 1000, entry.deadline - self._clock()))
        vote, reason = await self._transport.prepare(name, entry.tx.gtid, branch.payload, entry.deadline, timeout)
        await self._apply(entry, lambda: entry.tx.vote(name, vote, reason))

    async def _one_phase(self, entry: _Entry, name: str) -> None:
        branch = entry.tx.branches[name]
        try:
            # The outcome will live only at the participant: make sure recovery knows to ask it.
            await self._log.force(entry.record())
        except Exception as exc:  # nothing was sent yet, so aborting is safe
            reason = f"log write failed: {exc!r}"
            await self._apply(entry, lambda: entry.tx.one_phase_result(Outcome.ABORTED, reason))
            return
        attempt = 0
        while True:
            timeout = max(0.05, min(self._settings.prepare_timeout_ms / 1000, entry.deadline - self._clock()))
            outcome, reason = await self._transport.one_phase(
                name, entry.tx.gtid, branch.payload, entry.deadline, timeout
            )
            if outcome is not None:
                break
            # No answer: the commit may or may not have happened; ask again (it is idempotent).
            log.warning("one-phase commit outcome unknown, retrying", gtid=entry.tx.gtid, error=reason)
            await asyncio.sleep(self._backoff.delay(attempt))
            attempt += 1
        await self._apply(entry, lambda: entry.tx.one_phase_result(outcome, reason))

    async def _force_decision(self, entry: _Entry) -> None:
        tx = entry.tx
        entry.updated_at = self._clock()
        # The record says COMMITTING although the machine only moves there once it is durable.
        decision = entry.record(state=TxState.COMMITTING, decision=Outcome.COMMITTED)
        if self._settings.unsafe_lazy_decision:
            # Deliberately wrong (see the setting): phase 2 starts before anything is durable.
            await self._apply(entry, tx.decision_logged)
            return
        try:
            await failpoints.hit("coordinator.before_decision_logged")
            with tracer.start_as_current_span("coordinator.force_decision"):
                await self._log.force(decision)
            self.decisions_logged += 1
        except Exception as exc:
            reason = repr(exc)
            log.error("decision could not be logged", gtid=tx.gtid, error=reason)
            await self._apply(entry, lambda: tx.decision_failed(reason))
            return
        await failpoints.hit("coordinator.after_decision_logged")
        await self._apply(entry, tx.decision_logged)

    async def _deliver(self, entry: _Entry, name: str, outcome: Outcome) -> None:
        attempt = 0
        while outcome is Outcome.COMMITTED:
            try:
                await failpoints.hit("coordinator.before_commit_sent")
                break
            except failpoints.FailpointError:  # stands for a send that failed: retry
                await asyncio.sleep(self._backoff.delay(attempt))
                attempt += 1
        await self._transport.deliver(name, entry.tx.gtid, outcome)
        if outcome is Outcome.COMMITTED and not any(
            b.state is BranchState.COMMITTED for b in entry.tx.branches.values()
        ):
            await failpoints.hit("coordinator.after_first_commit_sent")
        await self._apply(entry, lambda: entry.tx.acknowledged(name))

    def _finish(self, entry: _Entry) -> None:
        """Every branch acknowledged: write END lazily and leave the active set."""
        entry.decided.set()
        entry.finished.set()
        entry.updated_at = self._clock()
        record = entry.final_record = entry.record()
        self._log.save(record)  # lost in a crash, recovery merely resends phase 2
        self._finished[record.gtid] = record
        while len(self._finished) > _FINISHED_IN_MEMORY:
            self._finished.popitem(last=False)
        self._active.pop(record.gtid, None)

    def _save(self, entry: _Entry) -> None:
        entry.updated_at = self._clock()
        self._log.save(entry.record())

    # -- recovery --------------------------------------------------------------------------

    def _resume_commit(self, record: TransactionRecord) -> None:
        """Take a decided transaction back in memory and resend phase 2 (see recovery)."""
        names = [b.name for b in record.branches if b.state in (BranchState.PREPARED, BranchState.COMMITTED)]
        tx, actions = Transaction.recovered_commit(record.gtid, names)
        entry = _Entry(
            tx=tx,
            created_at=record.created_at,
            updated_at=self._clock(),
            deadline=record.deadline,
            metadata=record.metadata,
            idempotency_key=record.idempotency_key,
            request_hash=record.request_hash,
        )
        self._active[tx.gtid] = entry
        self._run(entry, actions)

    # -- background duties -------------------------------------------------------------------

    async def _reap(self) -> None:
        """Abort active transactions past their deadline; prune old ones; forget old keys."""
        interval = self._settings.reaper_interval_ms / 1000
        next_prune = self._clock()
        while True:
            await asyncio.sleep(interval)
            now = self._clock()
            if now >= next_prune and not any(t.get_name() == "prune" for t in self._background):
                # Only finished transactions (every branch acknowledged phase 2) are pruned;
                # in a task of its own, so that a long prune never holds back the deadlines.
                self._spawn(self._log.prune(now - self._retention), name="prune")
                next_prune = now + self._prune_interval
            for entry in list(self._active.values()):
                if entry.tx.state is TxState.ACTIVE and entry.deadline <= now:
                    with contextlib.suppress(WrongState):
                        await self._apply(entry, lambda e=entry: e.tx.abort("deadline exceeded"))
                        self._save(entry)
            cutoff = now - self._settings.idempotency_ttl_seconds
            for key in [k for k, v in self._idempotency.items() if v.created_at < cutoff]:
                del self._idempotency[key]

    # -- helpers -------------------------------------------------------------------------------

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._task_done(self._background))

    def _spawn_for(self, entry: _Entry, coro: Any) -> None:
        task = asyncio.create_task(coro)
        entry.tasks.add(task)
        task.add_done_callback(self._task_done(entry.tasks))

    @staticmethod
    def _task_done(tasks: set[asyncio.Task[None]]) -> Callable[[asyncio.Task[None]], None]:
        def done(task: asyncio.Task[None]) -> None:
            tasks.discard(task)
            if not task.cancelled() and task.exception() is not None:
                log.error("background task failed", task=task.get_name(), error=repr(task.exception()))

        return done

    def _check_participant(self, name: str) -> None:
        if name not in self._transport.participants:
            raise UnknownParticipantError(f"no participant named {name!r} is registered")

    async def _lookup(self, gtid: str) -> TransactionRecord | None:
        """A transaction no longer active: from memory if it finished lately, else the log."""
        record = self._finished.get(gtid)
        return record if record is not None else await self._log.get(gtid)

    async def _entry_or_raise(self, gtid: str) -> _Entry:
        entry = self._active.get(gtid)
        if entry is not None:
            return entry
        record = await self._lookup(gtid)
        if record is None:
            raise NotFound(gtid)
        raise WrongState(f"cannot enlist in a transaction that is {record.state}")

    async def _finished_view(self, gtid: str, wanted: Outcome) -> TransactionView:
        """Commit or abort of a transaction no longer active: answer what happened."""
        record = await self._lookup(gtid)
        if record is None:
            raise NotFound(gtid)
        if wanted is Outcome.ABORTED and record.decision == Outcome.COMMITTED:
            raise WrongState(f"cannot abort a transaction that is {record.state}")
        if wanted is Outcome.COMMITTED and not record.commit_requested:
            raise WrongState(f"cannot commit a transaction that is {record.state}")
        return TransactionView(record, frozenset())

    def _view(self, entry: _Entry) -> TransactionView:
        record = entry.final_record or entry.record()
        return TransactionView(record, frozenset(entry.tx.pending_branches()))
