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
