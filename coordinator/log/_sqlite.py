"""The decision log on SQLite: WAL, ``synchronous=FULL``, group-committed writes."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from coordinator.log._base import DecisionLog, LogStats
from coordinator.records import AuditEntry, BranchRecord, IdempotencyEntry, TransactionRecord
from twopc_core.groupcommit import CommitObserver, GroupCommitter, open_sqlite

__all__ = ["SQLiteLog"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS transactions (
    gtid TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    decision TEXT,
    reason TEXT,
    one_phase INTEGER NOT NULL DEFAULT 0,
    commit_requested INTEGER NOT NULL DEFAULT 0,
    finished INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    deadline REAL NOT NULL,
    idempotency_key TEXT,
    request_hash TEXT,
    metadata BLOB NOT NULL,
    branches BLOB NOT NULL,
    principal TEXT,
    heuristic INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS transactions_unfinished ON transactions (finished, gtid);
-- For pruning: a transaction enters it once, when it finishes.
CREATE INDEX IF NOT EXISTS transactions_finished_at ON transactions (updated_at) WHERE finished = 1;
CREATE UNIQUE INDEX IF NOT EXISTS transactions_idempotency_key
    ON transactions (idempotency_key) WHERE idempotency_key IS NOT NULL;
-- Operators' acts; never pruned.
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    gtid TEXT,
    participant TEXT,
    reason TEXT NOT NULL,
    details BLOB NOT NULL
);
"""

_AUDIT_COLUMNS = "id, at, actor, action, gtid, participant, reason, details"

_COLUMNS = (
    "gtid, state, decision, reason, one_phase, commit_requested, finished, created_at, updated_at, deadline,"
    " idempotency_key, request_hash, metadata, branches, principal, heuristic"
)

#: Columns added since the first schema, for a file an older coordinator made.
_ADDED_COLUMNS = {"principal": "TEXT", "heuristic": "INTEGER NOT NULL DEFAULT 0"}

_UPSERT = f"""
INSERT INTO transactions ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (gtid) DO UPDATE SET
    state = excluded.state, decision = excluded.decision, reason = excluded.reason,
    one_phase = excluded.one_phase, commit_requested = excluded.commit_requested, finished = excluded.finished,
    updated_at = excluded.updated_at, deadline = excluded.deadline,
    metadata = excluded.metadata, branches = excluded.branches, principal = excluded.principal,
    heuristic = excluded.heuristic
"""

#: Pruning goes in chunks, each its own short transaction on the writer's thread, so
#: that group commits go on in between however much there is to prune.
_PRUNE_CHUNK = (
    "DELETE FROM transactions WHERE rowid IN "
    "(SELECT rowid FROM transactions WHERE finished = 1 AND updated_at < ? LIMIT ?)"
)
_PRUNE_CHUNK_ROWS = 2000


def _to_row(record: TransactionRecord) -> tuple[object, ...]:
    branches = [b.to_json() for b in record.branches]
    return (
        record.gtid,
        record.state,
        record.decision,
        record.reason,
        int(record.one_phase),
        int(record.commit_requested),
        int(record.finished),
        record.created_at,
        record.updated_at,
        record.deadline,
        record.idempotency_key,
        record.request_hash,
        orjson.dumps(record.metadata),
        orjson.dumps(branches),
        record.principal,
        int(record.heuristic),
    )


def _from_row(row: aiosqlite.Row) -> TransactionRecord:
    return TransactionRecord(
        gtid=row["gtid"],
        state=row["state"],
        decision=row["decision"],
        reason=row["reason"],
        one_phase=bool(row["one_phase"]),
        commit_requested=bool(row["commit_requested"]),
        finished=bool(row["finished"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        deadline=row["deadline"],
        idempotency_key=row["idempotency_key"],
        request_hash=row["request_hash"],
        metadata=orjson.loads(row["metadata"]),
        branches=tuple(BranchRecord(**b) for b in orjson.loads(row["branches"])),
        principal=row["principal"],
        heuristic=bool(row["heuristic"]),
    )


class SQLiteLog(DecisionLog):
    def __init__(self, path: Path | str) -> None:
        self._path = Path(path)
        self._reader: aiosqlite.Connection | None = None
        self._writer: GroupCommitter | None = None

    async def open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        # Reads use their own connection so they never land inside the writer's batch.
        self._reader = await open_sqlite(str(self._path))
        await self._reader.executescript(_SCHEMA)
        await self._add_missing_columns(self._reader)
        self._reader.row_factory = aiosqlite.Row
        self._writer = GroupCommitter(str(self._path))
        await self._writer.start()

    @staticmethod
    async def _add_missing_columns(conn: aiosqlite.Connection) -> None:
        async with conn.execute("PRAGMA table_info(transactions)") as cur:
            present = {row[1] for row in await cur.fetchall()}
        for column, kind in _ADDED_COLUMNS.items():
            if column not in present:
                await conn.execute(f"ALTER TABLE transactions ADD COLUMN {column} {kind}")
        await conn.commit()

    async def close(self) -> None:
        if self._writer is not None:
            await self._writer.close()
        if self._reader is not None:
            await self._reader.close()
        self._writer = self._reader = None

    def save(self, record: TransactionRecord) -> None:
        self._committer.write(_UPSERT, _to_row(record))

    async def force(self, record: TransactionRecord) -> None:
        await self._committer.write_durable(_UPSERT, _to_row(record))

    async def sync(self) -> None:
        await self._committer.flush()

    async def get(self, gtid: str) -> TransactionRecord | None:
        async with self._read.execute(f"SELECT {_COLUMNS} FROM transactions WHERE gtid = ?", (gtid,)) as cur:
            row = await cur.fetchone()
        return _from_row(row) if row is not None else None

    async def page(
        self, state: str | None, limit: int, after_gtid: str | None, heuristic: bool | None = None
    ) -> list[TransactionRecord]:
        sql = f"SELECT {_COLUMNS} FROM transactions WHERE gtid > ?"
        params: list[object] = [after_gtid or ""]
        if state is not None:
            sql += " AND state = ?"
            params.append(state)
        if heuristic is not None:
            sql += " AND heuristic = ?"
            params.append(int(heuristic))
        sql += " ORDER BY gtid LIMIT ?"
        params.append(limit)
        async with self._read.execute(sql, params) as cur:
            return [_from_row(row) for row in await cur.fetchall()]

    async def unfinished(self) -> list[TransactionRecord]:
        sql = f"SELECT {_COLUMNS} FROM transactions WHERE finished = 0 ORDER BY gtid"
        async with self._read.execute(sql) as cur:
            return [_from_row(row) for row in await cur.fetchall()]

    async def idempotency_keys(self, since: float) -> dict[str, IdempotencyEntry]:
        sql = (
            "SELECT idempotency_key, gtid, request_hash, created_at FROM transactions"
            " WHERE idempotency_key IS NOT NULL AND created_at >= ?"
        )
        async with self._read.execute(sql, (since,)) as cur:
            rows = await cur.fetchall()
        return {row[0]: IdempotencyEntry(row[1], row[2], row[3]) for row in rows}

    async def prune(self, finished_before: float) -> int:
        pruned = 0
        while True:
            deleted = await self._committer.run(_prune_chunk, finished_before, _PRUNE_CHUNK_ROWS)
            pruned += deleted
            if deleted < _PRUNE_CHUNK_ROWS:
                return pruned

    async def append_audit(self, entry: AuditEntry) -> AuditEntry:
        return await self._committer.run(_append_audit, entry)

    async def audit(self, limit: int, before_id: int | None) -> list[AuditEntry]:
        sql = f"SELECT {_AUDIT_COLUMNS} FROM audit WHERE id < ? ORDER BY id DESC LIMIT ?"
        async with self._read.execute(sql, (before_id if before_id is not None else 2**63 - 1, limit)) as cur:
            return [_audit_entry(tuple(row)) for row in await cur.fetchall()]

    @property
    def stats(self) -> LogStats:
        s = self._committer.stats
        return LogStats(commits=s.commits, durable_writes=s.durable_writes)

    def observe_commits(self, observer: CommitObserver) -> None:
        self._committer.stats.observer = observer

    @property
    def _committer(self) -> GroupCommitter:
        if self._writer is None:
            raise RuntimeError("the log is not open")
        return self._writer

    @property
    def _read(self) -> aiosqlite.Connection:
        if self._reader is None:
            raise RuntimeError("the log is not open")
        return self._reader


def _prune_chunk(conn: sqlite3.Connection, finished_before: float, rows: int) -> int:
    return conn.execute(_PRUNE_CHUNK, (finished_before, rows)).rowcount


def _append_audit(conn: sqlite3.Connection, entry: AuditEntry) -> AuditEntry:
    cur = conn.execute(
        "INSERT INTO audit (at, actor, action, gtid, participant, reason, details) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (entry.at, entry.actor, entry.action, entry.gtid, entry.participant, entry.reason, orjson.dumps(entry.details)),
    )
    assert cur.lastrowid is not None
    return dataclasses.replace(entry, id=cur.lastrowid)


def _audit_entry(row: Any) -> AuditEntry:
    id_, at, actor, action, gtid, participant, reason, details = row
    return AuditEntry(id_, at, actor, action, reason, gtid, participant, orjson.loads(details))
