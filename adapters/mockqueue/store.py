"""The queue's storage: staged items per branch and the committed list, in SQLite.

Committed items get a sequence number in commit order; a branch's items keep their
order and sit together. Every statement is idempotent on its own (items are unique
per ``(gtid, branch, idx)``), so a commit that is applied twice, or whose statements
land in two group commits around a crash, still adds each item exactly once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from twopc_core.groupcommit import GroupCommitter, acquire_shared, open_sqlite, release_shared

__all__ = ["QueueItem", "QueueStore", "encode_items"]

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS staged (
        gtid   TEXT NOT NULL,
        branch TEXT NOT NULL,
        idx    INTEGER NOT NULL,
        value  TEXT NOT NULL,
        PRIMARY KEY (gtid, branch, idx)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE IF NOT EXISTS items (
        seq    INTEGER PRIMARY KEY AUTOINCREMENT,
        gtid   TEXT NOT NULL,
        branch TEXT NOT NULL,
        idx    INTEGER NOT NULL,
        value  TEXT NOT NULL,
        UNIQUE (gtid, branch, idx)
    )
    """,
)

_PUBLISH = (
    "INSERT OR IGNORE INTO items (gtid, branch, idx, value) "
    "SELECT gtid, branch, idx, value FROM staged WHERE gtid = ? AND branch = ? ORDER BY idx"
)
_DROP = "DELETE FROM staged WHERE gtid = ? AND branch = ?"
_WAS_COMMITTED = "SELECT 1 FROM items WHERE gtid = ? AND branch = ? LIMIT 1"
#: Rows per INSERT statement when staging (4 parameters a row, far below SQLite's limit).
_ROWS_PER_STATEMENT = 1000


@dataclass(frozen=True, slots=True)
class QueueItem:
    seq: int
    gtid: str
    branch: str
    value: Any


def encode_items(values: Sequence[Any]) -> list[str]:
    """JSON texts of ``values``; ValueError naming the first one that cannot be stored."""
    encoded = []
    for index, value in enumerate(values):
        try:
            encoded.append(orjson.dumps(value).decode())
        except TypeError as exc:
            raise ValueError(f"item {index} cannot be stored as JSON: {exc}") from None
    return encoded


class QueueStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._reader: aiosqlite.Connection | None = None
        self._writer: GroupCommitter | None = None
        # (gtid, branch) -> number of staged items; the truth is on disk, this saves reads.
        self._staged: dict[tuple[str, str], int] = {}
        #: Items published (committed to the queue) since this store opened.
        self.published = 0

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = await open_sqlite(str(self.path))
        try:
            for statement in _SCHEMA:
                await conn.execute(statement)
            for gtid, branch, count in await conn.execute_fetchall(
                "SELECT gtid, branch, count(*) FROM staged GROUP BY gtid, branch"
            ):
                self._staged[(gtid, branch)] = count
        finally:
            await conn.close()
        self._writer = await acquire_shared(self.path)
        # Reads get their own connection: on the writer's they could see a group
        # commit's rows before it is committed (or after it is rolled back).
        self._reader = await aiosqlite.connect(str(self.path))
        await self._reader.execute("PRAGMA query_only = ON")

    async def close(self) -> None:
        if self._writer is not None:
            await release_shared(self._writer)
            self._writer = None
        if self._reader is not None:
            await self._reader.close()
            self._reader = None

    def staged(self) -> list[tuple[str, str]]:
        return list(self._staged)

    def staged_items(self) -> int:
        """Items staged by prepared branches, waiting for their outcome."""
        return sum(self._staged.values())

    def is_staged(self, gtid: str, branch: str) -> bool:
        return (gtid, branch) in self._staged

    async def stage(self, gtid: str, branch: str, values: Sequence[Any]) -> None:
        """Durably stage ``values`` for the branch (staging it again changes nothing)."""
        encoded = encode_items(values)
        statements = []
        for start in range(0, len(encoded), _ROWS_PER_STATEMENT):
            chunk = encoded[start : start + _ROWS_PER_STATEMENT]
            sql = "INSERT OR IGNORE INTO staged (gtid, branch, idx, value) VALUES " + ", ".join(
                ["(?, ?, ?, ?)"] * len(chunk)
            )
            params: list[Any] = []
            for offset, text in enumerate(chunk, start=start):
                params += (gtid, branch, offset, text)
            statements.append((sql, params))
        await self._durably(statements)
        if encoded:
            self._staged[(gtid, branch)] = len(encoded)

    async def commit(self, gtid: str, branch: str) -> None:
        """Move the branch's staged items to the end of the queue, in order."""
        await self._durably([(_PUBLISH, (gtid, branch)), (_DROP, (gtid, branch))])
        self.published += self._staged.pop((gtid, branch), 0)

    async def drop(self, gtid: str, branch: str) -> None:
        """Forget the branch's staged items."""
        await self._durably([(_DROP, (gtid, branch))])
        self._staged.pop((gtid, branch), None)

    async def was_committed(self, gtid: str, branch: str) -> bool:
        """Whether the branch's items are in the queue (its commit is on disk)."""
        if self._reader is None:
            raise RuntimeError("queue store is not open")
        async with self._reader.execute(_WAS_COMMITTED, (gtid, branch)) as cursor:
            return await cursor.fetchone() is not None

    async def items(self, after: int = 0, limit: int | None = None) -> list[QueueItem]:
        """Committed items with a sequence number above ``after``, in queue order."""
        if self._reader is None:
            raise RuntimeError("queue store is not open")
        async with self._reader.execute(
            "SELECT seq, gtid, branch, value FROM items WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, -1 if limit is None else limit),
        ) as cursor:
            rows = await cursor.fetchall()
        return [QueueItem(seq, gtid, branch, orjson.loads(value)) for seq, gtid, branch, value in rows]

    async def _durably(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        if self._writer is None:
            raise RuntimeError("queue store is not open")
        await self._writer.write_durable_many(statements)
