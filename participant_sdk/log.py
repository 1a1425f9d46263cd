"""The local participant log: what this participant promised for each branch.

One row per ``(gtid, branch)``. Every row lives in memory too (loaded at start), so
protocol handlers never read the database; the database is there to survive restarts.
Writes go through a :class:`~twopc.groupcommit.GroupCommitter`: many concurrent
forced writes share one SQLite transaction and one fsync.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from twopc.groupcommit import GroupCommitter, open_sqlite
from twopc.protocol import Vote

__all__ = ["BranchRecord", "BranchState", "ParticipantLog"]

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
    PRIMARY KEY (gtid, branch)
) WITHOUT ROWID
"""

# The whole row is written each time: one statement text, so the group committer
# can send consecutive writes as one executemany.
_UPSERT = (
    "INSERT OR REPLACE INTO branches "
    "(gtid, branch, status, vote, reason, payload_hash, created_at, updated_at, heuristic) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_FORGET = "DELETE FROM branches WHERE gtid = ? AND branch = ? AND status != 'prepared'"


class BranchState(StrEnum):
    PREPARED = "prepared"
    COMMITTED = "committed"
    ABORTED = "aborted"
    READ_ONLY = "read_only"

    @property
    def finished(self) -> bool:
        return self is not BranchState.PREPARED


@dataclass(frozen=True, slots=True)
class BranchRecord:
    gtid: str
    branch: str
    status: BranchState
    vote: Vote | None
    reason: str | None
    payload_hash: str | None
    created_at: float
    updated_at: float
    heuristic: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return (self.gtid, self.branch)


_UNSET = object()


class ParticipantLog:
    """The participant's durable record of its branches, cached whole in memory."""

    def __init__(self, path: str | Path, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self._clock = clock
        self._rows: dict[tuple[str, str], BranchRecord] = {}
        self._writer: GroupCommitter | None = None

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Read once at start; after that the writer's connection is the only one.
        conn = await open_sqlite(str(self.path))
        try:
            await conn.execute(_SCHEMA)
            rows = await conn.execute_fetchall(
                "SELECT gtid, branch, status, vote, reason, payload_hash, created_at, updated_at, heuristic"
                " FROM branches"
            )
        finally:
            await conn.close()
        for gtid, branch, status, vote, reason, phash, created, updated, heuristic in rows:
            self._rows[(gtid, branch)] = BranchRecord(
                gtid,
                branch,
                BranchState(status),
                Vote(vote) if vote else None,
                reason,
                phash,
                created,
                updated,
                bool(heuristic),
            )
        self._writer = GroupCommitter(str(self.path))
        await self._writer.start()

    async def close(self) -> None:
        """Write what is queued, then close the database."""
        if self._writer is not None:
            await self._writer.close()
            self._writer = None

    def get(self, gtid: str, branch: str) -> BranchRecord | None:
        return self._rows.get((gtid, branch))

    def __iter__(self) -> Iterator[BranchRecord]:
        return iter(list(self._rows.values()))

    def __len__(self) -> int:
        return len(self._rows)

    def prepared(self, min_age: float = 0.0) -> list[BranchRecord]:
        """Branches prepared at least ``min_age`` seconds ago (in doubt until phase 2)."""
        cutoff = self._clock() - min_age
        return [r for r in self._rows.values() if r.status is BranchState.PREPARED and r.updated_at <= cutoff]

    async def record(
        self,
        gtid: str,
        branch: str,
        status: BranchState,
        *,
        durable: bool,
        vote: Vote | object | None = _UNSET,
        reason: str | object | None = _UNSET,
        payload_hash: str | object | None = _UNSET,
        heuristic: bool | object = _UNSET,
    ) -> BranchRecord:
        """Write a branch's new status; fields not given keep their logged value.

        ``durable=True`` returns once the row is on disk (a promise about to be made
        to the coordinator); otherwise the row rides along with the next group commit.
        """
        writer = self._require_open()
        now = self._clock()
        old = self._rows.get((gtid, branch))
        if old is None:
            old = BranchRecord(gtid, branch, status, None, None, None, now, now)
        # Built field by field: dataclasses.replace costs several times as much, and
        # this runs twice for every branch.
        row = BranchRecord(
            gtid,
            branch,
            status,
            old.vote if vote is _UNSET else vote,  # type: ignore[arg-type]
            old.reason if reason is _UNSET else reason,  # type: ignore[arg-type]
            old.payload_hash if payload_hash is _UNSET else payload_hash,  # type: ignore[arg-type]
            old.created_at,
            now,
            old.heuristic if heuristic is _UNSET else heuristic,  # type: ignore[arg-type]
        )
        params = (
            row.gtid,
            row.branch,
            row.status.value,
            row.vote.value if row.vote else None,
            row.reason,
            row.payload_hash,
            row.created_at,
            row.updated_at,
            int(row.heuristic),
        )
        if durable:
            # Only what is on disk may be answered from memory.
            await writer.write_durable(_UPSERT, params)
        else:
            writer.write(_UPSERT, params)
        self._rows[row.key] = row
        return row

    def forget_finished(self, older_than: float) -> int:
        """Forget finished rows last updated before ``older_than``; return how many.

        Prepared rows are never forgotten: they are promises still open.
        """
        writer = self._require_open()
        stale = [r for r in self._rows.values() if r.status.finished and r.updated_at < older_than]
        for row in stale:
            del self._rows[row.key]
            writer.write(_FORGET, row.key)
        return len(stale)

    async def flush(self) -> None:
        """Return once every write queued so far is on disk."""
        await self._require_open().flush()

    def _require_open(self) -> GroupCommitter:
        if self._writer is None:
            raise RuntimeError("participant log is not open")
        return self._writer
