"""Group commit for an SQLite log: many writers, one transaction and one fsync.

Writers queue statements; a single writer task drains whatever is queued, runs it
in one SQLite transaction and commits once, then releases every waiter of that
batch together. Lazy writes ride along with the next batch and are not awaited.
Under load a batch holds many decisions; on an idle system a lone decision is
committed at once, with no timer in the way.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiosqlite
import structlog

__all__ = ["GroupCommitStats", "GroupCommitter", "open_sqlite"]

log = structlog.get_logger(__name__)


async def open_sqlite(path: str) -> aiosqlite.Connection:
    """Open an SQLite database for a durable log: WAL, full fsync, explicit transactions."""
    conn = await aiosqlite.connect(path, isolation_level=None)
    await conn.execute("PRAGMA journal_mode=WAL")
    await conn.execute("PRAGMA synchronous=FULL")
    await conn.execute("PRAGMA busy_timeout=5000")
    return conn


@dataclass
class GroupCommitStats:
    commits: int = 0
    statements: int = 0
    durable_writes: int = 0

    @property
    def durable_per_commit(self) -> float:
        return self.durable_writes / self.commits if self.commits else 0.0


@dataclass
class _Write:
    sql: str
    params: Sequence[Any]
    waiter: asyncio.Future[None] | None


class GroupCommitter:
    def __init__(self, conn: aiosqlite.Connection, max_batch: int = 2000) -> None:
        self._conn = conn
        self._max_batch = max_batch
        # Each entry commits whole: a batch is never cut inside one.
        self._queue: list[list[_Write]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        #: The writer has taken a batch off the queue and not yet committed it.
        self._committing = False
        self.stats = GroupCommitStats()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="group-commit-writer")

    async def close(self) -> None:
        """Commit what is queued, then stop the writer."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task

    def _check_open(self) -> None:
        if self._task is None or self._closing:
            raise RuntimeError("the group-commit writer is not running")

    def write(self, sql: str, params: Sequence[Any]) -> None:
        """Queue a lazy write: durable with the next batch, nobody waits for it."""
        self._check_open()
        self._queue.append([_Write(sql, params, None)])
        self._wakeup.set()

    async def write_durable(self, sql: str, params: Sequence[Any]) -> None:
        """Queue a forced write and return once it is committed to disk."""
        self._check_open()
        waiter = asyncio.get_running_loop().create_future()
        self._queue.append([_Write(sql, params, waiter)])
        self._wakeup.set()
        await asyncio.shield(waiter)

    async def write_durable_many(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        """Queue several statements that must commit together; return once they have.

        A batch is never cut between them, so they land in one SQLite transaction.
        """
        if not statements:
            return
        self._check_open()
        waiter = asyncio.get_running_loop().create_future()
        writes = [_Write(sql, params, None) for sql, params in statements[:-1]]
        sql, params = statements[-1]
        writes.append(_Write(sql, params, waiter))
        self._queue.append(writes)
        self._wakeup.set()
        await asyncio.shield(waiter)

    async def flush(self) -> None:
        """Return once everything queued so far is committed."""
        if (self._queue or self._committing) and not self._closing:
            await self.write_durable("SELECT 1", ())

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                entries = self._queue[: self._max_batch]
                del self._queue[: len(entries)]
                self._committing = True
                try:
                    writes = [write for entry in entries for write in entry]
                    error = await self._commit(writes)
                    if error is not None and len(entries) > 1:
                        # One bad entry must not fail the others: commit them one by one.
                        for entry in entries:
                            self._settle(entry, await self._commit(entry))
                    else:
                        self._settle(writes, error)
                finally:
                    self._committing = False
            if self._closing:
                return

    async def _commit(self, batch: list[_Write]) -> BaseException | None:
        """Run ``batch`` in one transaction; return the error instead of raising it."""
        try:
            await self._conn.execute("BEGIN IMMEDIATE")
            # Consecutive writes of one statement go as one executemany: fewer hops
            # to the database thread, same order.
            for sql, group in itertools.groupby(batch, key=lambda w: w.sql):
                rows = [w.params for w in group]
                if sql != "SELECT 1":
                    await self._conn.executemany(sql, rows)
                self.stats.statements += len(rows)
            await self._conn.execute("COMMIT")
            self.stats.commits += 1
            return None
        except Exception as exc:
            log.error("log commit failed", error=repr(exc), batch=len(batch))
            try:
                await self._conn.execute("ROLLBACK")
            except Exception:
                pass
            return exc

    def _settle(self, batch: list[_Write], error: BaseException | None) -> None:
        """Release the waiters of a committed (or failed) batch."""
        for write in batch:
            if write.waiter is None:
                continue
            self.stats.durable_writes += error is None and write.sql != "SELECT 1"
            if write.waiter.done():
                continue
            if error is None:
                write.waiter.set_result(None)
            else:
                write.waiter.set_exception(error)
