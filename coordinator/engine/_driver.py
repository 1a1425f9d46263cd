"""The thin async code that runs each transaction's state machine.

Active transactions live in memory: the hot path reads nothing from the log. The
driver feeds the machine what happens (votes, the durable decision, acknowledgements)
and carries out the actions it returns. Protocol rounds run in tasks of their own, so
a client that hangs up never stops a commit half-way.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace

from coordinator.config import ParticipantSettings, TransactionSettings
from coordinator.engine._ids import new_gtid, node_of
from coordinator.engine._machine import (
    Action,
    AskStatus,
    BranchState,
    Finish,
    ForceDecision,
    ForceRecord,
    NotifyAbort,
    SaveRecord,
    SendAbort,
    SendCommit,
    SendOnePhase,
    SendPrepare,
    Transaction,
)
from coordinator.engine._membership import Membership
from coordinator.engine._rounds import RoundSpans
from coordinator.log import DecisionLog, Fenced, IdempotencyEntry, TransactionRecord
from coordinator.metrics import CoordinatorMetrics
from coordinator.records import AuditEntry
from coordinator.transport import Backoff, CallFailed, EndpointCounts, Transport
from twopc_core import failpoints, telemetry
from twopc_core.protocol import Outcome

__all__ = [
    "Backlog",
    "Coordinator",
    "Elsewhere",
    "IdempotencyMismatch",
    "Moved",
    "NotFound",
    "NotReady",
    "TransactionView",
    "UnfinishedView",
    "UnknownParticipantError",
]

log = structlog.get_logger(__name__)
tracer = trace.get_tracer(__name__)

#: How many finished transactions stay answerable from memory.
_FINISHED_IN_MEMORY = 10_000


class NotFound(LookupError):
    """No transaction has this gtid (never begun, or pruned)."""

    def __init__(self, gtid: str) -> None:
        super().__init__(f"no transaction {gtid!r}")
        self.gtid = gtid


class UnknownParticipantError(ValueError):
    """A request names a participant that is not registered."""


class IdempotencyMismatch(ValueError):
    """An Idempotency-Key was reused for a different request."""


class NotReady(RuntimeError):
    """This replica holds no live lease (or its log does not answer): it takes no new work."""


class Moved(RuntimeError):
    """This replica lost its lease while the request waited: the transaction may belong to
    another replica now. Retrying the request (at any replica) is safe."""

    def __init__(self, gtid: str) -> None:
        super().__init__(f"transaction {gtid!r} moved to another replica while this one waited; retry")
        self.gtid = gtid


class Elsewhere(LookupError):
    """The request is about a transaction another live replica holds: ask it there."""

    def __init__(self, gtid: str, url: str) -> None:
        super().__init__(f"transaction {gtid!r} is held by the replica at {url}")
        self.gtid = gtid
        self.url = url


#: Branch states that say phase 2 reached the participant (abandoned is an operator's act).
_ACKNOWLEDGED = frozenset({BranchState.COMMITTED, BranchState.ABORTED})

#: Unfinished transactions taken into memory between two turns of the event loop.
_ADOPT_SLICE = 500

#: How often a best-effort abort after a restart is tried, and how long each try may take.
_NOTIFY_ATTEMPTS = 5
_NOTIFY_TIMEOUT = 10.0


@dataclass
class _Entry:
    """An in-memory transaction: the machine plus what the driver keeps around it."""

    tx: Transaction
    decided: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    #: Phase 2 on its way, by branch: an operator who abandons a branch stops its task.
    deliveries: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    #: The record written when every branch acknowledged; it changes no more.
    final_record: TransactionRecord | None = None
    #: This replica lost its lease: the transaction is no longer driven from here.
    dropped: bool = False
    #: When (``perf_counter``) the prepare round and phase 2 began, for the phase histograms.
    prepare_started: float | None = None
    phase_two_started: float | None = None
    #: Its outcome is counted in ``Coordinator.outcomes`` (once, even when decided before a restart).
    outcome_counted: bool = False
    #: The protocol rounds' spans, while something records them.
    rounds: RoundSpans | None = None


@dataclass(frozen=True)
class Backlog:
    """The unfinished work in memory: all of it, and the decided part still waiting
    for some branch's phase-2 acknowledgement (that participant is in doubt)."""

    unfinished: int
    in_doubt: int
    #: When (unix seconds) the oldest of each began; None when there is none.
    oldest_unfinished_at: float | None
    oldest_in_doubt_at: float | None


@dataclass(frozen=True)
class TransactionView:
    """What the API shows of a transaction, from memory or from the log."""

    record: TransactionRecord
    pending: frozenset[str]


@dataclass(frozen=True)
class UnfinishedView:
    """A transaction still in memory here: what it waits for, and since when."""

    record: TransactionRecord
    #: Branches that still have to acknowledge phase 2.
    pending: frozenset[str]
    #: Seconds since it began.
    age: float

    @property
    def in_doubt(self) -> frozenset[str]:
        """Pending branches of a decided transaction: they hold locks until phase 2
        reaches them (their participant may be down)."""
        return self.pending if self.record.decision is not None else frozenset()


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
        *,
        advertise_url: str = "",
        lease: float = 3.0,
        metrics: CoordinatorMetrics | None = None,
    ) -> None:
        self.metrics = metrics if metrics is not None else CoordinatorMetrics(enabled=False)
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
        self._recovered = 0
        #: How many times the work in memory was dropped (the lease lost): whatever was
        #: read or claimed before a drop belongs to the epoch that lost it.
        self._drops = 0
        self.decisions_logged = 0
        #: Branches found forced against their transaction's decision since start.
        self.heuristics = 0
        #: Transactions begun here, and those decided here by outcome, since start.
        self.begun = 0
        self.outcomes: Counter[str] = Counter()
        self.membership = Membership(log_store, node_id, advertise_url, lease, self._adopt, self._drop)

    # -- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        """Join the log, load what recovery needs and schedule it; returns before phase 2
        completes."""
        if self.metrics.enabled:
            self._log.observe_commits(self.metrics.log_committed)
        await self.membership.join()
        if self._log.shared:
            # Renewing from the start: loading thousands of unfinished transactions may
            # take longer than a lease.
            await self.membership.refresh()
            self._spawn(self.membership.run(), "membership")
        now = self._clock()
        self._idempotency = await self._log.idempotency_keys(now - self._settings.idempotency_ttl_seconds)
        await self._adopt()
        self._spawn(self._reap(), "reaper")

    async def close(self) -> None:
        """Stop every task; with a shared log, end the lease so another replica takes this
        one's unfinished work over at once rather than when the lease runs out."""
        tasks = list(self._background)
        for entry in self._active.values():
            tasks.extend(entry.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for entry in self._active.values():
            if entry.rounds is not None:
                entry.rounds.end(None)
        if self._log.shared and self.membership.me is not None:
            try:
                await self._log.leave()
            except Exception as exc:  # the lease then simply runs out
                log.warning("could not end the lease", error=repr(exc))

    @property
    def recovered(self) -> int:
        """Unfinished transactions found in the log at start or moved here by a takeover."""
        return self._recovered

    @property
    def node_id(self) -> str:
        return self._node_id

    @property
    def ready(self) -> bool:
        """Holding a live lease on a log that answers: new transactions are taken."""
        return self.membership.ready

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
        participants: Sequence[tuple[str, Any, bool]] = (),
        idempotency_key: str | None = None,
        request_hash: str | None = None,
        save: bool = True,
        principal: str | None = None,
    ) -> tuple[TransactionView, bool]:
        """Start a transaction; returns its view and whether it was created now.

        ``save=False`` skips the lazy BEGIN record when a commit follows at once.
        ``principal``: who begins it, kept with it (the API lets only them drive it).
        """
        found, created = await self._begin(
            timeout_ms, metadata, participants, idempotency_key, request_hash, save, principal
        )
        return (self._view(found) if isinstance(found, _Entry) else found), created

    async def _begin(
        self,
        timeout_ms: int | None,
        metadata: dict[str, Any] | None,
        participants: Sequence[tuple[str, Any, bool]],
        idempotency_key: str | None,
        request_hash: str | None,
        save: bool,
        principal: str | None = None,
    ) -> tuple[_Entry | TransactionView, bool]:
        """The new transaction's entry, or the view of the one its Idempotency-Key began
        (:class:`Elsewhere` when another live replica holds that one)."""
        if idempotency_key is not None:
            known = self._idempotency.get(idempotency_key)
            if known is not None:
                if known.request_hash != request_hash:
                    raise IdempotencyMismatch("Idempotency-Key was already used for a different request")
                with contextlib.suppress(NotFound):  # pruned meanwhile: begin afresh
                    return await self._replayed(known.gtid), False
        if not self.ready:
            raise NotReady("this replica holds no live lease on the log: it takes no new transactions")
        for name, _, _ in participants:
            self._check_participant(name)
        timeout = min(timeout_ms or self._settings.default_timeout_ms, self._settings.max_timeout_ms)
        now = self._clock()
        tx = Transaction(
            new_gtid(self._node_id, now),
            deadline=now + timeout / 1000,
            created_at=now,
            updated_at=now,
            metadata=metadata or {},
            idempotency_key=idempotency_key,
            request_hash=request_hash,
            principal=principal,
        )
        for name, payload, prepared in participants:
            tx.enlist(name, payload, prepared)  # the BEGIN record below holds them all
        if idempotency_key is not None and self._log.shared:
            # Claimed in the shared log before any work: a retry at another replica finds it.
            drops = self._drops
            holder = await self._claim(tx)
            if self._drops != drops:
                # Claimed under an epoch that is gone: the record is whoever took this
                # replica over's (or its own once it adopts again), never a new entry here.
                raise NotReady("this replica lost its lease while it began the transaction: ask again")
            if holder is not None:
                if holder.request_hash != request_hash:
                    raise IdempotencyMismatch("Idempotency-Key was already used for a different request")
                self._idempotency[idempotency_key] = IdempotencyEntry(holder.gtid, holder.request_hash, now)
                return await self._replayed(holder.gtid), False
            save = False  # the claim wrote the BEGIN record
        entry = _Entry(tx)
        self._active[tx.gtid] = entry
        self.begun += 1
        _tag_request(tx.gtid)
        if idempotency_key is not None:
            self._idempotency[idempotency_key] = IdempotencyEntry(tx.gtid, request_hash, now)
        if save:
            self._log.save(tx.record())  # for operators and listings; a commit writes its own
        return entry, True

    async def enlist(self, gtid: str, name: str, payload: Any = None, prepared: bool = False) -> TransactionView:
        self._check_participant(name)
        entry = self._active.get(gtid)
        if entry is None:
            return await self._settled_view(gtid, lambda tx: tx.enlist(name, payload, prepared))
        self._run(entry, entry.tx.enlist(name, payload, prepared))
        return self._view(entry)

    async def commit(self, gtid: str, wait_for_phase_two: bool = True) -> TransactionView:
        entry = self._active.get(gtid)
        if entry is None:
            return await self._settled_view(gtid, Transaction.commit)
        started = time.perf_counter()
        _tag_request(gtid)
        async with entry.lock:
            self._run(entry, entry.tx.commit())
        await entry.decided.wait()
        if entry.dropped and entry.tx.decision is None:
            raise Moved(gtid)
        _tag_request(gtid, entry.tx.decision)
        if wait_for_phase_two:
            await self._wait_for_phase_two(entry)
        self.metrics.commit_seconds.observe(time.perf_counter() - started)
        return self._view(entry)

    async def _wait_for_phase_two(self, entry: _Entry) -> None:
        """Wait, within the configured bound, until every branch acknowledged phase 2."""
        if self._settings.commit_wait_ms > 0:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(entry.finished.wait(), self._settings.commit_wait_ms / 1000)

    async def abort(self, gtid: str, reason: str = "aborted by the client") -> TransactionView:
        entry = self._active.get(gtid)
        if entry is None:
            return await self._settled_view(gtid, lambda tx: tx.abort(reason))
        _tag_request(gtid, Outcome.ABORTED)
        await self._apply(entry, lambda: entry.tx.abort(reason))
        await self._wait_for_phase_two(entry)
        return self._view(entry)

    async def execute(
        self,
        participants: Sequence[tuple[str, Any]],
        timeout_ms: int | None = None,
        metadata: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        request_hash: str | None = None,
        wait_for_phase_two: bool = True,
        principal: str | None = None,
    ) -> TransactionView:
        """Begin, enlist and commit in one call."""
        found, _ = await self._begin(
            timeout_ms,
            metadata,
            [(name, payload, False) for name, payload in participants],
            idempotency_key,
            request_hash,
            save=False,
            principal=principal,
        )
        gtid = found.tx.gtid if isinstance(found, _Entry) else found.record.gtid
        return await self.commit(gtid, wait_for_phase_two)

    async def parties(self, gtid: str) -> tuple[str | None, frozenset[str]]:
        """Who began ``gtid`` and its branches' participants: what access to it turns on."""
        entry = self._active.get(gtid)
        if entry is not None:
            return entry.tx.principal, frozenset(entry.tx.branches)
        record = await self._record_or_raise(gtid)
        return record.principal, frozenset(b.name for b in record.branches)

    async def get(self, gtid: str) -> TransactionView:
        entry = self._active.get(gtid)
        if entry is not None:
            return self._view(entry)
        return TransactionView(await self._record_or_raise(gtid), frozenset())

    async def page(
        self, state: str | None, limit: int, after: str | None, heuristic: bool | None = None
    ) -> list[TransactionView]:
        """Transactions in the order they began, ``limit`` of them after the gtid ``after``
        (only those with heuristic damage, or without, when ``heuristic`` says)."""
        await self._log.sync()
        views = []
        for record in await self._log.page(state, limit, after, heuristic):
            entry = self._active.get(record.gtid)
            view = self._view(entry) if entry is not None else TransactionView(record, frozenset())
            if (state is None or view.record.state == state) and heuristic in (None, view.record.heuristic):
                views.append(view)
        return views

    def unfinished(self, limit: int) -> list[UnfinishedView]:
        """The ``limit`` oldest transactions still in memory here (undecided, or decided
        with branches yet to acknowledge phase 2), oldest first. Reads no log."""
        now = self._clock()
        oldest = heapq.nsmallest(limit, self._active.values(), key=lambda e: (e.tx.created_at, e.tx.gtid))
        return [
            UnfinishedView(view.record, view.pending, max(0.0, now - view.record.created_at))
            for view in map(self._view, oldest)
        ]

    def payloads(self, gtid: str) -> dict[str, Any]:
        """The branches' payloads, by participant, while ``gtid`` is in memory here; the
        log keeps none, so a transaction finished or held elsewhere has none to show."""
        entry = self._active.get(gtid)
        return {} if entry is None else {name: b.payload for name, b in entry.tx.branches.items()}

    # -- operators ------------------------------------------------------------------

    async def abandon(self, gtid: str, participant: str, by: str, reason: str) -> TransactionView:
        """Stop phase 2 to ``participant``, gone for good; the decision stands. The act
        is durable, and in the audit, before this returns.

        Raises :class:`WrongState` while the transaction is undecided, or when that
        branch is not waiting for phase 2.
        """
        now = self._clock()
        entry = self._active.get(gtid)
        if entry is None:
            # Nothing in memory waits for phase 2 here: the machine says why it is refused.
            return await self._settled_view(gtid, lambda tx: tx.abandon(participant, by, now, reason))
        async with entry.lock:
            actions = entry.tx.abandon(participant, by, now, reason)
            entry.tx.updated_at = now
            delivery = entry.deliveries.pop(participant, None)
            if delivery is not None:
                delivery.cancel()
            self._run(entry, actions)
            await self._log.force(entry.final_record or entry.tx.record())
        await self.record_act(
            AuditEntry(0, now, by, "abandon", reason, gtid, participant, {"decision": str(entry.tx.decision)})
        )
        return self._view(entry)

    async def record_act(self, entry: AuditEntry) -> AuditEntry:
        """Keep an operator's act in the audit (durable) and the log file."""
        written = await self._log.append_audit(entry)
        log.warning(
            "operator act",
            act=written.action,
            by=written.actor,
            gtid=written.gtid,
            participant=written.participant,
            reason=written.reason,
            audit_id=written.id,
        )
        return written

    async def audit(self, limit: int, before: int | None) -> list[AuditEntry]:
        """Operators' acts, newest first."""
        return await self._log.audit(limit, before)

    def backlog(self) -> Backlog:
        """What is unfinished in memory now, and how old the oldest is."""
        unfinished = in_doubt = 0
        oldest: float | None = None
        oldest_in_doubt: float | None = None
        for entry in self._active.values():
            tx = entry.tx
            unfinished += 1
            if oldest is None or tx.created_at < oldest:
                oldest = tx.created_at
            if tx.decision is not None and tx.pending_branches():
                in_doubt += 1
                if oldest_in_doubt is None or tx.created_at < oldest_in_doubt:
                    oldest_in_doubt = tx.created_at
        return Backlog(unfinished, in_doubt, oldest, oldest_in_doubt)

    def endpoint_counts(self) -> dict[str, EndpointCounts]:
        return self._transport.endpoint_counts()

    def log_stats(self) -> dict[str, float]:
        commits = self._log.stats.commits
        return {
            "log_commits": commits,
            "decisions_logged": self.decisions_logged,
            "decisions_per_log_commit": self.decisions_logged / commits if commits else 0.0,
            "heuristics_found": self.heuristics,
            **self._transport.exchange_stats(),
        }

    # -- running the machine ------------------------------------------------------------

    def _run(self, entry: _Entry, actions: list[Action]) -> None:
        """Carry out what the machine asked for; protocol rounds run in tasks of their own."""
        self._stamp(entry.tx)
        for action in actions:
            match action:
                case SaveRecord():
                    self._log.save(entry.tx.record())
                case ForceRecord():
                    self._spawn_for(entry, self._force_record(entry))
                case SendPrepare(branches):
                    if entry.prepare_started is None:
                        entry.prepare_started = time.perf_counter()
                    rounds = self._rounds(entry)
                    within = rounds.prepare_round(len(branches)) if rounds else None
                    for name in branches:
                        self._spawn_for(entry, self._prepare(entry, name), within)
                case SendOnePhase(name):
                    self._spawn_for(entry, self._one_phase(entry, name))
                case ForceDecision():
                    self._prepare_round_ends(entry)
                    rounds = self._rounds(entry)
                    self._spawn_for(entry, self._force_decision(entry), rounds.decision() if rounds else None)
                case SendCommit(branches) | SendAbort(branches):
                    self._phase_two_starts(entry)
                    outcome = Outcome.COMMITTED if isinstance(action, SendCommit) else Outcome.ABORTED
                    rounds = self._rounds(entry)
                    within = rounds.phase_two(outcome, len(branches)) if rounds else None
                    for name in branches:
                        entry.deliveries[name] = self._spawn_for(entry, self._deliver(entry, name, outcome), within)
                case AskStatus(name):
                    self._spawn_for(entry, self._ask_status(entry, name))
                case NotifyAbort(branches):
                    for name in branches:
                        self._spawn(self._notify_abort(entry.tx.gtid, name), f"abort {entry.tx.gtid}")
                case Finish(durable=durable):
                    self._phase_two_ends(entry)
                    self._finish(entry, durable)
        if entry.tx.decision is not None:
            if not entry.outcome_counted:
                entry.outcome_counted = True
                self.outcomes[entry.tx.decision.value] += 1
                self._prepare_round_ends(entry)  # an abort is not forced: it is decided here
            entry.decided.set()

    def _stamp(self, tx: Transaction) -> None:
        """Date what just happened to the branches (a vote, an acknowledgement), before
        any record of it is written: the timeline operators read."""
        now: float | None = None
        for branch in tx.branches.values():
            if branch.vote is not None and branch.voted_at is None:
                now = now or self._clock()
                branch.voted_at = now
            if branch.acknowledged_at is None and branch.state in _ACKNOWLEDGED:
                now = now or self._clock()
                branch.acknowledged_at = now

    def _prepare_round_ends(self, entry: _Entry) -> None:
        if entry.prepare_started is not None:
            self.metrics.phase_seconds["prepare"].observe(time.perf_counter() - entry.prepare_started)
            entry.prepare_started = None

    @staticmethod
    def _phase_two_starts(entry: _Entry) -> None:
        if entry.phase_two_started is None:
            entry.phase_two_started = time.perf_counter()

    def _phase_two_ends(self, entry: _Entry) -> None:
        if entry.phase_two_started is not None and entry.tx.decision is not None:
            phase = "commit" if entry.tx.decision is Outcome.COMMITTED else "abort"
            self.metrics.phase_seconds[phase].observe(time.perf_counter() - entry.phase_two_started)

    @staticmethod
    def _rounds(entry: _Entry) -> RoundSpans | None:
        """The transaction's round spans: begun, under the current context, by the first
        round while something records; none at all otherwise (the hot path)."""
        if entry.rounds is None and telemetry.recording():
            entry.rounds = RoundSpans(entry.tx.gtid)
        return entry.rounds

    async def _apply(self, entry: _Entry, event: Callable[[], list[Action]]) -> None:
        async with entry.lock:
            actions = event()
            entry.tx.updated_at = self._clock()
            self._run(entry, actions)

    async def _prepare(self, entry: _Entry, name: str) -> None:
        tx = entry.tx
        timeout = tx.prepare_timeout(self._clock(), self._settings.prepare_timeout_ms / 1000)
        vote, reason = await self._transport.prepare(name, tx.gtid, tx.branches[name].payload, tx.deadline, timeout)
        await self._apply(entry, lambda: tx.vote(name, vote, reason))

    async def _force_record(self, entry: _Entry) -> None:
        tx = entry.tx
        try:
            await self._log.force(tx.record())
        except Fenced:
            self._lost_lease()
            return
        except Exception as exc:  # nothing was sent yet, so aborting is safe
            reason = repr(exc)
            log.error("one-phase record could not be logged", gtid=tx.gtid, error=reason)
            await self._apply(entry, lambda: tx.record_failed(reason))
            return
        await self._apply(entry, tx.record_logged)

    async def _one_phase(self, entry: _Entry, name: str) -> None:
        tx = entry.tx
        attempt = 0
        while True:
            timeout = tx.one_phase_timeout(self._clock(), self._settings.prepare_timeout_ms / 1000)
            outcome, reason = await self._transport.one_phase(
                name, tx.gtid, tx.branches[name].payload, tx.deadline, timeout
            )
            if outcome is not None:
                break
            # No answer: the commit may or may not have happened; ask again (it is idempotent).
            log.warning("one-phase commit outcome unknown, retrying", gtid=tx.gtid, error=reason)
            await asyncio.sleep(self._backoff.delay(attempt))
            attempt += 1
        await self._apply(entry, lambda: tx.one_phase_result(outcome, reason))

    async def _force_decision(self, entry: _Entry) -> None:
        tx = entry.tx
        tx.updated_at = self._clock()
        if self._settings.unsafe_lazy_decision:
            # Deliberately wrong (see the setting): phase 2 starts before anything is durable.
            await self._apply(entry, tx.decision_logged)
            return
        try:
            await failpoints.hit("coordinator.before_decision_logged")
            started = time.perf_counter()
            # A span only when something records it: making one that records nothing
            # cost about 1 % of the coordinator's CPU under load.
            span: contextlib.AbstractContextManager[Any] = (
                tracer.start_as_current_span("coordinator.force_decision", attributes={"twopc.gtid": tx.gtid})
                if telemetry.recording()
                else contextlib.nullcontext()
            )
            with span:
                await self._log.force(tx.decision_record())
            self.metrics.phase_seconds["decision"].observe(time.perf_counter() - started)
            self.decisions_logged += 1
        except Fenced:
            # Whether the decision made it in is for the replica that takes over to read.
            self._lost_lease()
            return
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
        answer = await self._transport.deliver(name, entry.tx.gtid, outcome)
        if outcome is Outcome.COMMITTED and not any(
            b.state is BranchState.COMMITTED for b in entry.tx.branches.values()
        ):
            await failpoints.hit("coordinator.after_first_commit_sent")
        done = answer.status if answer.status is not outcome else None
        if done is not None:
            self._heuristic_damage(entry.tx.gtid, name, done, outcome)
        entry.deliveries.pop(name, None)
        await self._apply(entry, lambda: entry.tx.acknowledged(name, done))

    async def _ask_status(self, entry: _Entry, name: str) -> None:
        """Ask a branch until it answers what it knows of its transaction."""
        tx = entry.tx
        attempt = 0
        while True:
            try:
                status = await self._transport.status(name, tx.gtid)
                break
            except CallFailed as exc:
                log.warning("recovery: branch unreachable", gtid=tx.gtid, participant=name, error=str(exc))
                await asyncio.sleep(self._backoff.delay(attempt))
                attempt += 1
        await self._apply(entry, lambda: tx.one_phase_status(status))

    async def _notify_abort(self, gtid: str, name: str) -> None:
        for attempt in range(_NOTIFY_ATTEMPTS):
            try:
                answer = await asyncio.wait_for(self._transport.deliver(name, gtid, Outcome.ABORTED), _NOTIFY_TIMEOUT)
            except (TimeoutError, CallFailed):
                await asyncio.sleep(self._backoff.delay(attempt))
                continue
            if answer.status is not Outcome.ABORTED:
                # Forced to commit while nobody could tell it otherwise: the damage is
                # recorded on the transaction, which has ended already.
                self._heuristic_damage(gtid, name, answer.status, Outcome.ABORTED)
                with contextlib.suppress(NotFound):
                    tx = Transaction.from_record(await self._record_or_raise(gtid))
                    if tx.forced_after_end(name, answer.status):
                        await self._log.force(tx.record())
                        self._finished.pop(gtid, None)
            return

    def _heuristic_damage(self, gtid: str, name: str, done: Outcome, decision: Outcome) -> None:
        """A participant reported an operator's force against the decision: counted,
        logged, and in the audit (the act was the participant's operator's; this is
        where the coordinator learnt of it)."""
        self.heuristics += 1
        log.error(
            "heuristic damage: a participant was forced against the decision",
            gtid=gtid,
            participant=name,
            forced=done.value,
            decision=decision.value,
        )
        act = AuditEntry(
            0,
            self._clock(),
            f"participant:{name}",
            "heuristic",
            f"forced to {done.value} at the participant, against the decision ({decision.value})",
            gtid,
            name,
            {"forced": done.value, "decision": decision.value},
        )
        self._spawn(self._record_quietly(act), f"audit {gtid}")

    async def _record_quietly(self, act: AuditEntry) -> None:
        try:
            await self.record_act(act)
        except Exception as exc:  # the log line above stands; the audit misses this one
            log.warning("could not write the audit", gtid=act.gtid, error=repr(exc))

    def _finish(self, entry: _Entry, durable: bool) -> None:
        """Every branch acknowledged: write END and leave the active set."""
        entry.decided.set()
        entry.finished.set()
        if entry.rounds is not None:
            entry.rounds.end(entry.tx.decision)
        entry.tx.updated_at = self._clock()
        record = entry.final_record = entry.tx.record()
        self._finished[record.gtid] = record
        while len(self._finished) > _FINISHED_IN_MEMORY:
            self._finished.popitem(last=False)
        if durable:
            # Active until the END is durable: whoever waits for the active set to drain
            # (a test, a graceful stop) then finds the log agreeing.
            self._spawn(self._force_end(entry, record), f"end {record.gtid}")
        else:
            self._log.save(record)  # lost in a crash, recovery merely resends phase 2
            self._active.pop(record.gtid, None)

    # -- recovery --------------------------------------------------------------------------

    async def _adopt(self) -> None:
        """Take into memory every unfinished transaction the log says this replica owns
        (at start, after a takeover, after joining again) and carry out what each needs."""
        kinds: Counter[str] = Counter()
        drops = self._drops
        for number, record in enumerate(await self._log.unfinished(), start=1):
            if self._drops != drops:
                return  # the lease was lost meanwhile: joining again adopts afresh
            if record.gtid not in self._active:
                kinds.update(self._recover(record))
            if number % _ADOPT_SLICE == 0:
                await asyncio.sleep(0)  # the lease renewals, and what was scheduled, go on
        if kinds:
            log.info("unfinished transactions taken into memory", **kinds)

    async def _drop(self) -> None:
        """This replica lost its lease: stop driving the transactions in memory (another
        replica may own them now) and wake whoever waits on them."""
        self._drops += 1
        entries = list(self._active.values())
        self._active.clear()
        tasks = [task for entry in entries for task in entry.tasks]
        for entry in entries:
            entry.dropped = True
            entry.decided.set()
            entry.finished.set()
            if entry.rounds is not None:
                entry.rounds.end(None)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        log.warning("dropped the transactions in memory", count=len(entries))

    def _lost_lease(self) -> None:
        """A write was fenced: have the membership drop the work, join again and adopt."""
        self._spawn(self.membership.fenced(), "fenced")

    async def _force_end(self, entry: _Entry, record: TransactionRecord) -> None:
        try:
            await self._log.force(record)
        except Fenced:
            self._lost_lease()
        finally:
            if self._active.get(record.gtid) is entry:
                del self._active[record.gtid]

    def _recover(self, record: TransactionRecord) -> list[str]:
        """Take an unfinished transaction of the log back in memory and carry out what the
        machine says it needs; returns at once, with the names of the actions."""
        self._recovered += 1
        if record.idempotency_key is not None:
            self._idempotency[record.idempotency_key] = IdempotencyEntry(
                record.gtid, record.request_hash, record.created_at
            )
        entry = _Entry(Transaction.from_record(record))
        entry.outcome_counted = entry.tx.decision is not None  # counted where it was decided
        actions = entry.tx.recover()
        names = [type(a).__name__ for a in actions]
        log.debug("recovering", gtid=record.gtid, actions=names)
        entry.tx.updated_at = self._clock()
        self._active[record.gtid] = entry
        self._run(entry, actions)
        return names

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
            for entry in [e for e in self._active.values() if e.tx.expired(now)]:
                await self._expire(entry, now)
            cutoff = now - self._settings.idempotency_ttl_seconds
            for key in [k for k, v in self._idempotency.items() if v.created_at < cutoff]:
                del self._idempotency[key]

    async def _expire(self, entry: _Entry, now: float) -> None:
        await self._apply(entry, lambda: entry.tx.expire(now))

    # -- helpers -------------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._task_done(self._background))

    def _spawn_for(
        self, entry: _Entry, coro: Coroutine[Any, Any, None], within: otel_context.Context | None = None
    ) -> asyncio.Task[None]:
        """A task of the transaction's; ``within``: the trace context it runs in (a
        round's span), else the current one."""
        if within is None:
            task = asyncio.create_task(coro)
        else:
            token = otel_context.attach(within)  # the task takes a copy of the context
            try:
                task = asyncio.create_task(coro)
            finally:
                otel_context.detach(token)
        entry.tasks.add(task)
        task.add_done_callback(self._task_done(entry.tasks))
        return task

    @staticmethod
    def _task_done(tasks: set[asyncio.Task[Any]]) -> Callable[[asyncio.Task[Any]], None]:
        def done(task: asyncio.Task[Any]) -> None:
            tasks.discard(task)
            if not task.cancelled() and task.exception() is not None:
                log.error("background task failed", task=task.get_name(), error=repr(task.exception()))

        return done

    def _check_participant(self, name: str) -> None:
        if name not in self._transport.participants:
            raise UnknownParticipantError(f"no participant named {name!r} is registered")

    async def locate(self, gtid: str) -> str | None:
        """Where a request about ``gtid`` is answered: ``None`` here, else the URL of the
        live replica that holds it. The transaction of a replica that is gone is answered
        here once that replica is fenced (this replica takes it over if nobody has): only
        then does "no record" mean aborted."""
        if gtid in self._active or not self._log.shared:
            return None
        record = await self._log.get(gtid)
        if record is not None and record.finished:
            return None
        holder = (record.owner if record is not None else None) or node_of(gtid)
        if holder is None or holder == self._node_id:
            return None
        url = self.membership.url_of(holder)
        if url is None:
            try:
                await self.membership.take_over(holder)
            except Fenced:
                self._lost_lease()
                raise NotReady("this replica lost its lease on the log: ask another one") from None
            url = self.membership.url_of(holder)  # it may have come back meanwhile
            if url is None and not self.membership.fenced_for_good(holder):
                # Its lease ran out but it is not fenced yet (its stalled batch holds its
                # row): it might still write a decision, so nothing may be answered yet.
                raise NotReady(f"replica {holder} is being taken over; retry")
        return url

    async def _replayed(self, gtid: str) -> TransactionView:
        """The view of a transaction an Idempotency-Key began, wherever it lives."""
        if gtid in self._active:
            return self._view(self._active[gtid])
        url = await self.locate(gtid)
        if url is not None:
            raise Elsewhere(gtid, url)
        return await self.get(gtid)

    async def _claim(self, tx: Transaction) -> TransactionRecord | None:
        try:
            return await self._log.claim(tx.record())
        except Fenced:
            self._lost_lease()
            raise NotReady("this replica lost its lease on the log: it takes no new transactions") from None

    async def _record_or_raise(self, gtid: str) -> TransactionRecord:
        """A transaction no longer active: from memory if it finished lately, else the log."""
        record = self._finished.get(gtid)
        if record is None:
            record = await self._log.get(gtid)
        if record is None:
            raise NotFound(gtid)
        return record

    async def _settled_view(self, gtid: str, event: Callable[[Transaction], list[Action]]) -> TransactionView:
        """A request about a transaction no longer in memory: the machine, rebuilt from its
        record, says whether it is refused (WrongState) or answered with what happened."""
        record = await self._record_or_raise(gtid)
        event(Transaction.from_record(record))
        return TransactionView(record, frozenset())

    def _view(self, entry: _Entry) -> TransactionView:
        record = entry.final_record or entry.tx.record()
        return TransactionView(record, frozenset(entry.tx.pending_branches()))


def _tag_request(gtid: str, outcome: Outcome | None = None) -> None:
    """The transaction on the current (the client's request) span, when it records."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute("twopc.gtid", gtid)
        if outcome is not None:
            span.set_attribute("twopc.outcome", outcome.value)
