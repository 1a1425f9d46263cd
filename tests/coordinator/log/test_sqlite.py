"""The SQLite decision log: a file of one process, a cluster of one. What it shares with
every store is tested in test_base.py, against both."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

from coordinator.log import SQLiteLog
from tests.coordinator.log.conftest import record


async def test_a_log_of_one_process_is_a_cluster_of_one_whose_lease_never_runs_out(tmp_path: Path) -> None:
    log = SQLiteLog(tmp_path / "log.db")
    await log.open()
    try:
        assert not log.shared
        me = await log.join("c1", "http://c1.test:7070", 3.0)
        assert (me.epoch, me.lease_expires_at, me.alive) == (1, math.inf, True)
        assert await log.renew() == me
        assert await log.take_over(me) is None
    finally:
        await log.close()


async def test_a_claim_in_a_log_of_one_process_is_a_lazy_write(tmp_path: Path) -> None:
    log = SQLiteLog(tmp_path / "log.db")
    await log.open()
    try:
        await log.join("c1", "http://c1.test:7070", 3.0)
        assert await log.claim(record("g1", idempotency_key="k1")) is None
        assert log.stats.durable_writes == 0
    finally:
        await log.close()
    with sqlite3.connect(tmp_path / "log.db") as db:
        assert db.execute("SELECT gtid, idempotency_key FROM transactions").fetchall() == [("g1", "k1")]


async def test_a_file_an_older_coordinator_made_gets_the_new_columns_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    with sqlite3.connect(path) as db:  # the first schema: no owner, no heuristic flag
        db.execute(
            "CREATE TABLE transactions (gtid TEXT PRIMARY KEY, state TEXT NOT NULL, decision TEXT, reason TEXT,"
            " one_phase INTEGER NOT NULL DEFAULT 0, commit_requested INTEGER NOT NULL DEFAULT 0,"
            " finished INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL, updated_at REAL NOT NULL,"
            " deadline REAL NOT NULL, idempotency_key TEXT, request_hash TEXT, metadata BLOB NOT NULL,"
            " branches BLOB NOT NULL)"
        )
        db.execute(
            "INSERT INTO transactions VALUES ('g0', 'committed', 'committed', NULL, 0, 1, 1, 1.0, 2.0, 3.0,"
            " NULL, NULL, '{}', '[{\"name\": \"a\", \"state\": \"committed\", \"early\": false, \"reason\": null}]')"
        )
    log = SQLiteLog(path)
    await log.open()
    try:
        old = await log.get("g0")
        assert old is not None and (old.principal, old.heuristic, old.branches[0].state) == (None, False, "committed")
        await log.force(record("g1"))
        assert [r.gtid for r in await log.page(None, 10, None)] == ["g0", "g1"]
    finally:
        await log.close()
