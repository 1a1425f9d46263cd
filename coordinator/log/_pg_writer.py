"""Group commit for the PostgreSQL log: many writers, one fenced transaction per batch.

As :class:`twopc_core.groupcommit.GroupCommitter` does for SQLite: writers queue their
records, and a single writer task drains whatever is queued into one PostgreSQL
transaction, commits once, then releases every waiter of that batch together. On an
idle system a lone forced write goes at once (the writer lets one turn of the event loop
go by, so that writes set off by the same burst share the commit); lazy writes ride
with the next forced batch, or are committed ``lazy_delay`` seconds after they were
queued.

A batch is one pipelined exchange (BEGIN, the fence, the claims, the upserts: a few
records as an ``executemany``, more as one statement of column arrays) and the COMMIT:
two round trips, however many records it holds. The fence is the conditional UPDATE
of the writer's own node row (:data:`FENCE`); if it finds no live lease of this epoch
the batch is rolled back whole: its forced writers hear :class:`Fenced`, its lazy writes
are dropped, and so is everything queued under that epoch since.

A fault of the database is never reported as a failed write when the write may have
happened: a batch whose connection failed, before its COMMIT or while the COMMIT was in
flight, is sent again (its upserts are idempotent, a claim finds its own row, and the
fence decides) with capped backoff until it commits or is fenced. Only an answer that
retrying cannot change (a constraint the data breaks, a right the role lacks) fails a
write, after the batch has been split so that one bad write fails nobody else.
"""

from __future__ import annotations

import asyncio
import enum
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import psycopg
import structlog
from psycopg.pq import TransactionStatus

from coordinator.log._base import Fenced, LogUnavailable
from coordinator.log._pg_faults import is_transient, reason
from coordinator.log._pg_rows import CLAIM, FENCE, HOLDERS, UNFENCED, UPSERT, from_row, returned, rows, send
from coordinator.records import TransactionRecord
from twopc_core import failpoints
from twopc_core.groupcommit import Cancellable, GroupCommitStats, Timer

__all__ = ["BEFORE_COMMIT", "Fence", "PostgresWriter"]

log = structlog.get_logger(__name__)

#: The failpoint between a batch's statements and its COMMIT, where the batch holds its
#: node row locked.
BEFORE_COMMIT = "coordinator.log.before_commit"

Connect = Callable[[], Awaitable[psycopg.AsyncConnection[Any]]]


@dataclass(frozen=True)
class Fence:
    """Whose writes these are: the node row every batch must find holding this epoch
    under a live lease."""

    node_id: str
    epoch: int


class _Kind(enum.Enum):
    UPSERT = "upsert"
    CLAIM = "claim"
    #: Waits for its batch, writes nothing.
    FLUSH = "flush"


@dataclass(eq=False, slots=True)
class _Write:
    kind: _Kind
    record: TransactionRecord | None
    #: The epoch the write was queued under; a batch fenced on another writes nothing of it.
    fence: Fence | None
    #: ``None``: a lazy write, nobody waits for it.
    waiter: asyncio.Future[Any] | None


class _BatchFenced(Exception):
    """The batch's fence found no live lease of its epoch."""


class PostgresWriter:
    """The one writer of a replica's records to the PostgreSQL log.

    ``connect`` opens a connection in autocommit mode (again after one failed);
    ``timeout`` bounds one attempt at a batch; ``close_grace`` is how long :meth:`close`
    keeps retrying while the database is away before it gives up on what is queued.
    """

    def __init__(
        self,
        connect: Connect,
        *,
        max_batch: int = 2000,
        lazy_delay: float = 0.02,
        timeout: float = 10.0,
        retry_base: float = 0.05,
        retry_cap: float = 2.0,
        close_grace: float = 5.0,
        timer: Timer | None = None,
        unsafe_unfenced: bool = False,
    ) -> None:
        self._connect = connect
        # Broken on purpose: a batch goes under the epoch its writes were queued with,
        # whatever happened since, and its fence finds the node row whatever its lease.
        self._unsafe_unfenced = unsafe_unfenced
        self._fence_statement = UNFENCED if unsafe_unfenced else FENCE
        self._max_batch = max_batch
        self._lazy_delay = lazy_delay
        self._timeout = timeout
        self._retry_base = retry_base
        self._retry_cap = retry_cap
        self._close_grace = close_grace
        self._timer = timer
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._queue: list[_Write] = []
        #: Writes in the queue that somebody waits for.
        self._forced_queued = 0
        self._lazy_due = False
        self._lazy_timer: Cancellable | None = None
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._close_deadline = 0.0
        self._committing = False
        #: The epoch new writes are queued under; ``None`` before joining and once fenced.
        self.fence: Fence | None = None
        self.stats = GroupCommitStats()

    async def start(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Start writing, on ``conn`` for a start."""
        self._conn = conn
        timer = self._timer if self._timer is not None else asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run(timer), name="postgres-log-writer")

    async def close(self) -> None:
        """Commit what is queued (for at most ``close_grace`` seconds of retrying while
        the database is away), then stop."""
        self._closing = True
        self._close_deadline = time.monotonic() + self._close_grace
        self._wakeup.set()
        try:
            if self._task is not None:
                await self._task
        finally:
            if self._lazy_timer is not None:
                self._lazy_timer.cancel()
                self._lazy_timer = None
            await self._drop_connection()

    def write(self, record: TransactionRecord) -> None:
        """Queue a lazy write under the current epoch; nobody waits for it."""
        self._queue_write(_Write(_Kind.UPSERT, record, self.fence, None))

    async def write_durable(self, record: TransactionRecord) -> None:
        """Queue a forced write; return once it is committed, or raise :class:`Fenced`."""
        await self._queued(_Kind.UPSERT, record)

    async def claim(self, record: TransactionRecord) -> TransactionRecord | None:
        """Insert ``record`` durably unless its Idempotency-Key is taken: then return the
        record holding the key, and write nothing."""
        holder: TransactionRecord | None = await self._queued(_Kind.CLAIM, record)
        return holder

    async def flush(self) -> None:
        """Return once everything queued so far is committed (or dropped as fenced)."""
        if (self._queue or self._committing) and not self._closing:
            await self._queued(_Kind.FLUSH, None)

    def _check_open(self) -> None:
        if self._task is None or self._closing:
            raise RuntimeError("the log's writer is not running")

    def _queue_write(self, write: _Write) -> None:
        self._check_open()
        self._queue.append(write)
        if write.waiter is not None:
            self._forced_queued += 1
        self._wakeup.set()

    async def _queued(self, kind: _Kind, record: TransactionRecord | None) -> Any:
        if kind is not _Kind.FLUSH and self.fence is None:
            self._check_open()
            raise Fenced("this replica holds no lease on the log (fenced, or it left): it must join again")
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue_write(_Write(kind, record, self.fence, waiter))
        # Cancelling the caller cancels only this future: the write stays in its batch.
        return await waiter

    # -- the writer task ---------------------------------------------------------------

    async def _run(self, timer: Timer) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue and (self._forced_queued or self._lazy_due or self._closing):
                # One more turn of the loop: writes that what just ran has set in motion
                # join this commit. No timer.
                await asyncio.sleep(0)
                batch = self._queue[: self._max_batch]
                del self._queue[: len(batch)]
                self._forced_queued -= sum(write.waiter is not None for write in batch)
                self._committing = True
                try:
                    await self._commit([w for w in batch if w.kind is not _Kind.FLUSH])
                except Exception as exc:  # a bug: fail the batch rather than hang its waiters
                    log.exception("log writer failed")
                    for write in batch:
                        _settle(write, exc)
                finally:
                    self._committing = False
                for write in batch:
                    if write.kind is _Kind.FLUSH:
                        _settle(write, None)
            self._lazy_due = False
            if self._queue and self._lazy_timer is None:  # lazy writes only: they wait a little
                self._lazy_timer = timer.call_later(self._lazy_delay, self._lazy_waited)
            if self._closing:
                return

    def _lazy_waited(self) -> None:
        self._lazy_timer = None
        self._lazy_due = True
        self._wakeup.set()

    async def _commit(self, writes: list[_Write]) -> None:
        """Commit ``writes`` in one transaction, retrying while the database is away;
        settle every waiter."""
        attempt = 0
        while True:
            fence = self.fence
            live = [w for w in writes if fence is not None and w.fence == fence]
            if self._unsafe_unfenced:  # every write goes, whatever epoch it was queued under
                live = [w for w in writes if w.fence is not None]
                fence = live[0].fence if live else None
            self._fenced([w for w in writes if fence is None or w.fence != fence])
            if not live or fence is None:
                return
            writes = live
            try:
                conn = await self._connection()
                started = time.perf_counter()
                async with asyncio.timeout(self._timeout):
                    results = await _run_batch(conn, fence, live, self._fence_statement)
            except _BatchFenced:
                if self.fence == fence:
                    self.fence = None
                log.error(
                    "log write fenced: this replica's lease ran out or was taken",
                    node=fence.node_id,
                    epoch=fence.epoch,
                    writes=len(live),
                )
                self._fenced(live)
                return
            except Exception as exc:
                await self._drop_connection_if_unsure(exc)
                if is_transient(exc):
                    if self._closing and time.monotonic() >= self._close_deadline:
                        self._abandon(live, exc)
                        return
                    log.warning("log commit failed; retrying", error=reason(exc), attempt=attempt, batch=len(live))
                    await asyncio.sleep(self._backoff(attempt))
                    attempt += 1
                    continue
                if len(live) > 1:
                    # One bad write must not fail the others: commit them one by one.
                    for write in live:
                        await self._commit([write])
                    return
                self._refused(live[0], exc)
                return
            self.stats.commits += 1
            self.stats.statements += len(live)
            durable = 0
            for write, result in zip(live, results, strict=True):
                # A claim that found its key taken wrote nothing.
                if write.waiter is not None and result is None:
                    durable += 1
                _settle(write, result)
            self.stats.durable_writes += durable
            if self.stats.observer is not None:
                self.stats.observer(time.perf_counter() - started, durable)
            return

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self._retry_cap, self._retry_base * 2.0**attempt)
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def _fenced(self, writes: list[_Write]) -> None:
        lazy = [w.record.gtid for w in writes if w.waiter is None and w.record is not None]
        if lazy:
            log.error("lazy log writes dropped: their epoch was fenced", gtids=lazy[:20], count=len(lazy))
        for write in writes:
            if write.waiter is not None:
                epoch = write.fence.epoch if write.fence is not None else None
                _settle(write, Fenced(f"the write was fenced: epoch {epoch} of this replica no longer holds a lease"))

    def _refused(self, write: _Write, exc: BaseException) -> None:
        gtid = write.record.gtid if write.record is not None else None
        if write.waiter is None:
            log.error("lazy log write refused by the database", gtid=gtid, error=reason(exc))
        _settle(write, LogUnavailable(f"the log's database refused the write of {gtid}: {reason(exc)}"))

    def _abandon(self, writes: list[_Write], exc: BaseException) -> None:
        """Closing while the database is away: give up on ``writes`` without saying
        they failed (they may have been committed)."""
        log.error(
            "log closed with writes unconfirmed: the database did not answer", error=reason(exc), writes=len(writes)
        )
        for write in writes:
            if write.waiter is not None and not write.waiter.done():
                write.waiter.cancel()

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            await self._drop_connection()
            self._conn = await self._connect()
        return self._conn

    async def _drop_connection_if_unsure(self, exc: BaseException) -> None:
        conn = self._conn
        if conn is None:
            return
        timed_out = isinstance(exc, TimeoutError)
        if timed_out or conn.closed or conn.broken or conn.info.transaction_status != TransactionStatus.IDLE:
            await self._drop_connection()

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close()
            except Exception as exc:  # already gone
                log.debug("closing a failed log connection", error=reason(exc))


def _settle(write: _Write, result: object) -> None:
    if write.waiter is None or write.waiter.done():
        return
    if isinstance(result, BaseException):
        write.waiter.set_exception(result)
    else:
        write.waiter.set_result(result)


async def _run_batch(
    conn: psycopg.AsyncConnection[Any], fence: Fence, writes: list[_Write], fence_statement: str = FENCE
) -> list[object]:
    """One attempt at ``writes`` in one transaction: the fence, the claims, the upserts
    (the last write of each gtid), in one pipelined exchange, then COMMIT. Returns each
    write's result: ``None``, or for a claim the record holding its key."""
    upserts: dict[str, TransactionRecord] = {}
    claims: list[TransactionRecord] = []
    for write in writes:
        assert write.record is not None
        if write.kind is _Kind.CLAIM:
            claims.append(write.record)
        else:
            upserts[write.record.gtid] = write.record
    owner = fence.node_id
    holders: dict[str, TransactionRecord] = {}
    claimed: list[bool] = []
    # Built first: from the fence's execute (which the driver sends at once) to the Sync
    # the server holds the node row while it reads on, and a replica paused in between
    # holds it until it resumes; nothing but sending may stand in that gap.
    claim_rows = rows(CLAIM, claims, owner) if claims else None
    upsert_rows = rows(UPSERT, list(upserts.values()), owner) if upserts else None
    async with conn.pipeline() as pipeline, conn.transaction():
        fenced = conn.cursor()
        await fenced.execute(fence_statement, (fence.node_id, fence.epoch))
        claiming = conn.cursor()
        if claim_rows is not None:
            await send(claiming, claim_rows)
        if upsert_rows is not None:
            await send(conn.cursor(), upsert_rows)
        # Everything so far in one round trip, ended by a Sync rather than a mere flush:
        # only a server waiting at a Sync point counts as idle in the transaction, so
        # that it ends the session of a replica that stalls from here on (one paused
        # while it holds its node row would hold a takeover up).
        await pipeline.sync()
        if await fenced.fetchone() is None:
            raise _BatchFenced  # rolls back whatever the statements after the fence did
        if claims:
            written = {gtid for (gtid,) in await returned(claiming)}
            claimed = [r.gtid in written for r in claims]
            taken = [r.idempotency_key for r, won in zip(claims, claimed, strict=True) if not won]
            if taken:
                cur = await conn.execute(HOLDERS, (taken,))
                await pipeline.sync()
                holders = {holder.idempotency_key or "": holder for holder in map(from_row, await cur.fetchall())}
        await failpoints.hit(BEFORE_COMMIT)
    results: list[object] = []
    claim_results = iter(zip(claims, claimed, strict=True))
    for write in writes:
        if write.kind is not _Kind.CLAIM:
            results.append(None)
            continue
        record, won = next(claim_results)
        holder = holders.get(record.idempotency_key or "")
        if won or (holder is not None and holder.gtid == record.gtid):
            results.append(None)  # ours (found again when an earlier attempt did commit)
        elif holder is not None:
            results.append(holder)
        else:
            results.append(LogUnavailable(f"cannot claim for {record.gtid}: that gtid is in the log already"))
    return results
