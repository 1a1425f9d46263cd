"""Group commit for an SQLite log: many writers, one transaction and one fsync.

Writers queue statements; a single writer task drains whatever is queued, runs it
in one SQLite transaction and commits once, then releases every waiter of that
batch together. Under load a batch holds many decisions; on an idle system a lone
decision is committed at once, with no timer in the way; the writer only lets one
more turn of the event loop go by, so that writes set off by the same burst (a batch
of votes) share the commit.

Lazy writes are not awaited, and nobody is the worse for their waiting a little: they
ride along with the next forced write, or are committed ``lazy_delay`` seconds after
they were queued if no forced write comes first. A crash may lose them, which is what
lazy means; a commit of their own for each burst of them would cost as much as one for
the forced writes. The wait is set on a :class:`Timer`, the event loop's ``call_later``
unless another is given (a test gives :class:`twopc_core.testing.ManualTimer`, and fires
it when it chooses).

Users of one database file in one process share its writer (:func:`acquire_shared`):
the mock queue's items and its participant log's rows then commit in one SQLite
transaction, with one fsync, instead of one per file.

The writer has its own connection on a thread of its own, and a whole batch —
BEGIN, the statements, COMMIT — is one trip to that thread: every trip costs a
wake-up on both sides, and under load those wake-ups were a large share of the CPU.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import aiosqlite
import structlog

__all__ = [
    "Cancellable",
    "CommitObserver",
    "GroupCommitStats",
    "GroupCommitter",
    "Timer",
    "acquire_shared",
    "open_sqlite",
    "release_shared",
]

log = structlog.get_logger(__name__)

T = TypeVar("T")


_PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL", "PRAGMA busy_timeout=5000")


async def open_sqlite(path: str) -> aiosqlite.Connection:
    """Open an SQLite database for a durable log: WAL, full fsync, explicit transactions."""
    conn = await aiosqlite.connect(path, isolation_level=None)
    for pragma in _PRAGMAS:
        await conn.execute(pragma)
    return conn


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    for pragma in _PRAGMAS:
        conn.execute(pragma)
    return conn


class Cancellable(Protocol):
    """A call set on a :class:`Timer`, which can be called off before it is due."""

    def cancel(self) -> None: ...


class Timer(Protocol):
    """What sets the call that commits waiting lazy writes: the event loop itself
    satisfies it (``loop.call_later``)."""

    def call_later(self, delay: float, callback: Callable[[], object]) -> Cancellable:
        """Call ``callback`` once, ``delay`` seconds from now, unless cancelled first."""
        ...


#: Told of each commit: how long it took (seconds) and how many forced writes it made durable.
CommitObserver = Callable[[float, int], None]


@dataclass
class GroupCommitStats:
    commits: int = 0
    statements: int = 0
    durable_writes: int = 0
    #: Told of every commit, when set (the coordinator's metrics).
    observer: CommitObserver | None = None

    @property
    def durable_per_commit(self) -> float:
        return self.durable_writes / self.commits if self.commits else 0.0


#: The statement of a flush marker: only waits for its batch, never runs.
_FLUSH = "SELECT 1"


@dataclass
class _Write:
    sql: str
    params: Sequence[Any]
    waiter: asyncio.Future[None] | None


class GroupCommitter:
    """The one writer of the SQLite database at ``path``.

    ``timer`` sets the commit of lazy writes nobody forced (by default the running
    event loop, taken at :meth:`start`).
    """

    def __init__(
        self, path: str, max_batch: int = 2000, lazy_delay: float = 0.02, *, timer: Timer | None = None
    ) -> None:
        self._path = path
        self._lazy_delay = lazy_delay
        self._timer = timer
        self._conn: sqlite3.Connection | None = None
        # One thread: the connection is only ever used from it.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="group-commit")
        self._max_batch = max_batch
        # Each entry commits whole: a batch is never cut inside one.
        self._queue: list[list[_Write]] = []
        #: Entries in the queue that somebody waits for.
        self._forced_queued = 0
        #: Lazy writes have waited long enough: commit them even without a forced write.
        self._lazy_due = False
        self._lazy_timer: Cancellable | None = None
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        #: The writer has taken a batch off the queue and not yet committed it.
        self._committing = False
        self.stats = GroupCommitStats()

    async def start(self) -> None:
        self._conn = await self._in_thread(_connect, self._path)
        timer = self._timer if self._timer is not None else asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run(timer), name="group-commit-writer")

    async def close(self) -> None:
        """Commit what is queued, then stop the writer."""
        self._closing = True
        self._wakeup.set()
        try:
            if self._task is not None:
                await self._task
        finally:
            if self._lazy_timer is not None:
                self._lazy_timer.cancel()
                self._lazy_timer = None
            if self._conn is not None:
                await self._in_thread(self._conn.close)
                self._conn = None
            self._thread.shutdown(wait=False)

    async def _in_thread(self, function: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, function, *args)

    def _check_open(self) -> None:
        if self._task is None or self._closing:
            raise RuntimeError("the group-commit writer is not running")

    def write(self, sql: str, params: Sequence[Any]) -> None:
        """Queue a lazy write: durable with the next forced write, or within
        ``lazy_delay`` seconds; nobody waits for it."""
        self._check_open()
        self._queue.append([_Write(sql, params, None)])
        self._wakeup.set()

    async def write_durable(self, sql: str, params: Sequence[Any]) -> None:
        """Queue a forced write and return once it is committed to disk."""
        self._check_open()
        waiter = asyncio.get_running_loop().create_future()
        self._queue.append([_Write(sql, params, waiter)])
        self._forced_queued += 1
        self._wakeup.set()
        # Cancelling the caller cancels only this future: the write stays in its batch.
        await waiter

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
        self._forced_queued += 1
        self._wakeup.set()
        # Cancelling the caller cancels only this future: the write stays in its batch.
        await waiter

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """``function(connection, *args)`` on the writer's thread, between two batches:
        for the rare read, or a statement whose result the caller needs. The connection
        is in autocommit mode there."""
        self._check_open()
        assert self._conn is not None
        result: T = await self._in_thread(function, self._conn, *args)
        return result

    async def flush(self) -> None:
        """Return once everything queued so far is committed."""
        if (self._queue or self._committing) and not self._closing:
            await self.write_durable(_FLUSH, ())

    async def _run(self, timer: Timer) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue and (self._forced_queued or self._lazy_due or self._closing):
                # One more turn of the loop: writes that what just ran has set in motion
                # (the rest of a batch of votes) join this commit. No timer.
                await asyncio.sleep(0)
                entries = self._queue[: self._max_batch]
                del self._queue[: len(entries)]
                self._forced_queued -= sum(entry[-1].waiter is not None for entry in entries)
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
            self._lazy_due = False
            if self._queue and self._lazy_timer is None:  # lazy writes only: they wait a little
                self._lazy_timer = timer.call_later(self._lazy_delay, self._lazy_waited)
            if self._closing:
                return

    def _lazy_waited(self) -> None:
        self._lazy_timer = None
        self._lazy_due = True
        self._wakeup.set()

    async def _commit(self, batch: list[_Write]) -> BaseException | None:
        """Run ``batch`` in one transaction; return the error instead of raising it."""
        started = time.perf_counter()
        error: BaseException | None = await self._in_thread(self._commit_in_thread, [(w.sql, w.params) for w in batch])
        if error is None:
            self.stats.commits += 1
            self.stats.statements += len(batch)
            if self.stats.observer is not None:
                forced = sum(w.waiter is not None and w.sql != _FLUSH for w in batch)
                self.stats.observer(time.perf_counter() - started, forced)
        else:
            log.error("log commit failed", error=repr(error), batch=len(batch))
        return error

    def _commit_in_thread(self, batch: list[tuple[str, Sequence[Any]]]) -> BaseException | None:
        conn = self._conn
        assert conn is not None
        try:
            conn.execute("BEGIN IMMEDIATE")
            # Consecutive writes of one statement go as one executemany, in order.
            for sql, group in itertools.groupby(batch, key=lambda write: write[0]):
                if sql != _FLUSH:
                    conn.executemany(sql, [params for _, params in group])
            conn.execute("COMMIT")
            return None
        except Exception as exc:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except Exception:
                    pass
            return exc

    def _settle(self, batch: list[_Write], error: BaseException | None) -> None:
        """Release the waiters of a committed (or failed) batch."""
        for write in batch:
            if write.waiter is None:
                continue
            self.stats.durable_writes += error is None and write.sql != _FLUSH
            if write.waiter.done():
                continue
            if error is None:
                write.waiter.set_result(None)
            else:
                write.waiter.set_exception(error)


#: The shared writers of this process, by event loop and database file, with their users.
_shared: dict[tuple[int, str], tuple[GroupCommitter, int]] = {}


def _file_key(path: str | Path) -> str:
    # A string operation (and a getcwd): nothing that waits on the disk.
    return os.path.abspath(path)


async def acquire_shared(path: str | Path) -> GroupCommitter:
    """The writer of the database at ``path`` shared by every user in this process (and
    event loop): started by the first, closed when the last calls :func:`release_shared`."""
    key = (id(asyncio.get_running_loop()), _file_key(path))
    entry = _shared.get(key)
    if entry is not None:
        _shared[key] = (entry[0], entry[1] + 1)
        return entry[0]
    writer = GroupCommitter(str(path))
    await writer.start()
    _shared[key] = (writer, 1)
    return writer


async def release_shared(writer: GroupCommitter) -> None:
    """One user is done with a writer from :func:`acquire_shared`; the last one closes it
    (committing what is queued)."""
    for key, (shared, users) in list(_shared.items()):
        if shared is writer:
            if users > 1:
                _shared[key] = (shared, users - 1)
                await writer.flush()  # what this user queued is on disk when it is done, as with close()
                return
            del _shared[key]
            break
    await writer.close()
