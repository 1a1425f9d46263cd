"""The local participant log: what this participant promised for each branch.

One row per ``(gtid, branch)`` in SQLite, kept for the retention. Protocol handlers
read memory, not the database: every prepared row (an open promise) lives there, and
so does every finished row written in the last ``keep_in_memory`` seconds or whose
transaction's deadline has not passed yet. The second rule lets a prepare for a branch
missing from memory start at once while its deadline lies ahead: had this branch been
seen before, its row would still be in memory. Only what falls outside both rules —
a repeated call long after the fact — is looked up on disk. Memory therefore holds
about a minute of traffic, not an hour of it.

Writes go through a :class:`~twopc_core.groupcommit.GroupCommitter`: many concurrent forced
writes share one SQLite transaction and one fsync.
"""

from __future__ import annotations

import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from enum import Enum
from pathlib import Path
from typing import Any

from participant_sdk._records import BranchRecord, RecordState
from twopc_core.groupcommit import GroupCommitter, acquire_shared, open_sqlite, release_shared
from twopc_core.protocol import Vote

__all__ = ["BranchRecord", "ParticipantLog", "RecordState"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS branches (
    gtid         TEXT NOT NULL,
    branch       TEXT NOT NULL,
    status       TEXT NOT NULL,
    vote         TEXT,
    reason       TEXT,
    payload_hash TEXT,
    created_at   REAL NOT NULL,
    updated_at   REAL NOT NULL,
    heuristic    INTEGER NOT NULL DEFAULT 0,
    deadline     REAL,
    PRIMARY KEY (gtid, branch)
) WITHOUT ROWID
"""
_COLUMNS = "gtid, branch, status, vote, reason, payload_hash, created_at, updated_at, heuristic, deadline"
# The whole row is written each time: one statement text, so the group committer
# can send consecutive writes as one executemany.
_UPSERT = f"INSERT OR REPLACE INTO branches ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_SELECT_ONE = f"SELECT {_COLUMNS} FROM branches WHERE gtid = ? AND branch = ?"
_SELECT_LIVE = f"SELECT {_COLUMNS} FROM branches WHERE status = 'prepared' OR updated_at >= ? OR deadline >= ?"
#: Finished rows by age, for pruning: a row enters it once, when its branch finishes.
_FINISHED_INDEX = "CREATE INDEX IF NOT EXISTS branches_finished ON branches (updated_at) WHERE status != 'prepared'"
#: Pruning goes in chunks, each its own short transaction, so group commits go on between them.
_FORGET_CHUNK = (
    "DELETE FROM branches WHERE (gtid, branch) IN "
    "(SELECT gtid, branch FROM branches WHERE status != 'prepared' AND updated_at < ? LIMIT ?)"
)
_FORGET_CHUNK_ROWS = 2000

#: How many rows one write looks at for eviction: more than it adds, so memory keeps up.
_EVICTION_STEP = 4


def _from_row(row: Iterable[Any]) -> BranchRecord:
    gtid, branch, status, vote, reason, phash, created, updated, heuristic, deadline = row
    return BranchRecord(
        gtid, branch, RecordState(status), Vote(vote) if vote else None, reason, phash, created, updated,
        bool(heuristic), deadline,
    )  # fmt: skip


class _Unset(Enum):
    """A field :meth:`ParticipantLog.record` is not given: it keeps its logged value."""

    UNSET = "unset"


_UNSET = _Unset.UNSET


class ParticipantLog:
    """The participant's durable record of its branches; the live part cached in memory.

    ``keep_in_memory``: seconds a finished row stays in memory after its last write
    (longer while its transaction's deadline is ahead).
    """

    def __init__(
        self, path: str | Path, clock: Callable[[], float] = time.time, *, keep_in_memory: float = 60.0
    ) -> None:
        self.path = Path(path)
        self._clock = clock
        self.keep_in_memory = keep_in_memory
        self._prepared: dict[tuple[str, str], BranchRecord] = {}
        # Oldest write first, so eviction looks only at the front.
        self._finished: OrderedDict[tuple[str, str], BranchRecord] = OrderedDict()
        self._writer: GroupCommitter | None = None
        #: Lookups that had to read the database (a figure for benchmarks and tests).
        self.disk_reads = 0

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        now = self._clock()
        # Read once at start; after that the writer's connection is the only one.
        conn = await open_sqlite(str(self.path))
        try:
            await conn.execute(_SCHEMA)
            columns = {row[1] for row in await conn.execute_fetchall("PRAGMA table_info(branches)")}
            if "deadline" not in columns:  # a log written before rows had a deadline
                await conn.execute("ALTER TABLE branches ADD COLUMN deadline REAL")
            await conn.execute(_FINISHED_INDEX)
            rows = await conn.execute_fetchall(_SELECT_LIVE, (now - self.keep_in_memory, now))
        finally:
            await conn.close()
        for row in sorted(map(_from_row, rows), key=lambda r: r.updated_at):
            self._remember(row)
        self._writer = await acquire_shared(self.path)

    async def close(self) -> None:
        """Write what is queued, then close the database."""
        if self._writer is not None:
            await release_shared(self._writer)
            self._writer = None

    # -- reading -----------------------------------------------------------------------

    def get(self, gtid: str, branch: str) -> BranchRecord | None:
        """The row from memory: every prepared row, and the recent finished ones."""
        key = (gtid, branch)
        return self._prepared.get(key) or self._finished.get(key)

    async def lookup(self, gtid: str, branch: str, deadline: float | None = None) -> BranchRecord | None:
        """The row from memory, or else from disk (a finished row no longer recent).

        ``deadline``: the transaction's, where the caller knows it (a prepare). While
        it is ahead, a row missing from memory is missing from disk too, since rows of
        live transactions are never dropped from memory: no read is needed.
        """
        row = self.get(gtid, branch)
        if row is not None or self.live(deadline):
            return row
        self.disk_reads += 1
        found = await self._require_open().run(_select_one, gtid, branch)
        if found is None:
            return None
        row = _from_row(found)
        self._remember(row)  # the next lookup of a repeated call is served from memory
        return row

    @property
    def durable_writes(self) -> int:
        """Writes somebody waited to see on disk since the log opened (a figure for
        benchmarks and tests: a vote at a resource holding its branches' state makes none)."""
        return self._writer.stats.durable_writes if self._writer is not None else 0

    def now(self) -> float:
        """The log's clock: the time its rows are written at."""
        return self._clock()

    def live(self, deadline: float | None) -> bool:
        """Whether a transaction with this deadline is live: a row of it missing from
        memory was never written (see :meth:`lookup`)."""
        return deadline is not None and deadline >= self._clock()

    def __iter__(self) -> Iterator[BranchRecord]:
        """The rows in memory."""
        return iter([*self._prepared.values(), *self._finished.values()])

    def __len__(self) -> int:
        return len(self._prepared) + len(self._finished)

    def prepared(self, min_age: float = 0.0) -> list[BranchRecord]:
        """Branches prepared at least ``min_age`` seconds ago (in doubt until phase 2)."""
        cutoff = self._clock() - min_age
        return [r for r in self._prepared.values() if r.updated_at <= cutoff]

    @property
    def in_doubt_count(self) -> int:
        return len(self._prepared)

    def oldest_prepared_at(self) -> float | None:
        """When the longest-waiting prepared branch was prepared; None when none is."""
        return min((r.updated_at for r in self._prepared.values()), default=None)

    # -- writing -----------------------------------------------------------------------

    async def record(
        self,
        gtid: str,
        branch: str,
        status: RecordState,
        *,
        durable: bool,
        vote: Vote | _Unset | None = _UNSET,
        reason: str | _Unset | None = _UNSET,
        payload_hash: str | _Unset | None = _UNSET,
        heuristic: bool | _Unset = _UNSET,
        deadline: float | _Unset | None = _UNSET,
    ) -> BranchRecord:
        """Write a branch's new status; fields not given keep their logged value.

        ``durable=True`` returns once the row is on disk (a promise about to be made
        to the coordinator); otherwise the row rides along with the next group commit.
        The previous row is taken from memory: look a row up before changing it.
        """
        writer = self._require_open()
        now = self._clock()
        old = self.get(gtid, branch)
        if old is None:
            old = BranchRecord(gtid, branch, status, None, None, None, now, now)
        # Built field by field: dataclasses.replace costs several times as much, and
        # this runs twice for every branch.
        row = BranchRecord(
            gtid,
            branch,
            status,
            old.vote if vote is _UNSET else vote,
            old.reason if reason is _UNSET else reason,
            old.payload_hash if payload_hash is _UNSET else payload_hash,
            old.created_at,
            now,
            old.heuristic if heuristic is _UNSET else heuristic,
            old.deadline if deadline is _UNSET else deadline,
        )
        params = _params(row)
        if durable:
            # Only what is on disk may be answered from memory.
            await writer.write_durable(_UPSERT, params)
        else:
            writer.write(_UPSERT, params)
        self._remember(row)
        self._evict(now, _EVICTION_STEP)
        return row

    def cache(self, row: BranchRecord) -> None:
        """Take in a row learnt elsewhere (from a resource that holds its branches'
        state), as it is; written lazily, since the resource has it durably."""
        self._require_open().write(_UPSERT, _params(row))
        self._remember(row)

    def _remember(self, row: BranchRecord) -> None:
        key = row.key
        if row.status is RecordState.PREPARED:
            self._finished.pop(key, None)
            self._prepared[key] = row
        else:
            self._prepared.pop(key, None)
            self._finished.pop(key, None)  # to the back: the newest write
            self._finished[key] = row

    def _evict(self, now: float, limit: int | None = None) -> int:
        """Drop finished rows that are neither recent nor of a live transaction, oldest
        first, looking at ``limit`` rows at most; return how many were dropped."""
        recent = now - self.keep_in_memory
        dropped = looked = 0
        while self._finished and (limit is None or looked < limit):
            key, row = next(iter(self._finished.items()))
            if row.updated_at >= recent:
                break
            looked += 1
            self._finished.pop(key)
            if row.deadline is not None and row.deadline >= now:
                self._finished[key] = row  # its transaction is still live: look again later
                if limit is None and looked > len(self._finished):
                    break
            else:
                dropped += 1
        return dropped

    async def forget_finished(self, older_than: float) -> int:
        """Delete finished rows last written before ``older_than``; return how many.

        Prepared rows are never forgotten: they are promises still open.
        """
        writer = self._require_open()
        self._evict(self._clock())
        for key in [key for key, row in self._finished.items() if row.updated_at < older_than]:
            del self._finished[key]
        await writer.flush()  # a lazy row still queued is deleted too
        forgotten = 0
        while True:
            deleted = await writer.run(_forget_chunk, older_than, _FORGET_CHUNK_ROWS)
            forgotten += deleted
            if deleted < _FORGET_CHUNK_ROWS:
                return forgotten

    async def flush(self) -> None:
        """Return once every write queued so far is on disk."""
        await self._require_open().flush()

    def _require_open(self) -> GroupCommitter:
        if self._writer is None:
            raise RuntimeError("participant log is not open")
        return self._writer


def _params(row: BranchRecord) -> tuple[Any, ...]:
    return (
        row.gtid,
        row.branch,
        row.status.value,
        row.vote.value if row.vote else None,
        row.reason,
        row.payload_hash,
        row.created_at,
        row.updated_at,
        int(row.heuristic),
        row.deadline,
    )


def _select_one(conn: sqlite3.Connection, gtid: str, branch: str) -> tuple[Any, ...] | None:
    row: tuple[Any, ...] | None = conn.execute(_SELECT_ONE, (gtid, branch)).fetchone()
    return row


def _forget_chunk(conn: sqlite3.Connection, older_than: float, rows: int) -> int:
    return conn.execute(_FORGET_CHUNK, (older_than, rows)).rowcount
