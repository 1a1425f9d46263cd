"""The SQLite decision log: durable, last write wins, and only finished rows are pruned."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from coordinator.log import BranchRecord, SQLiteLog, TransactionRecord
from coordinator.log import _sqlite as sqlite_log


def record(
    gtid: str,
    state: str = "active",
    decision: str | None = None,
    finished: bool = False,
    *,
    created_at: float = 100.0,
    updated_at: float = 100.0,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
) -> TransactionRecord:
    return TransactionRecord(
        gtid=gtid,
        state=state,
        decision=decision,
        created_at=created_at,
        updated_at=updated_at,
        deadline=130.0,
        finished=finished,
        branches=(BranchRecord("a", "prepared"), BranchRecord("b", "read_only")),
        idempotency_key=idempotency_key,
        request_hash=request_hash,
    )


async def test_a_forced_record_survives_reopening(tmp_path: Path) -> None:
    log = SQLiteLog(tmp_path / "log.db")
    await log.open()
    await log.force(record("g1", "committing", "committed"))
    await log.close()
    reopened = SQLiteLog(tmp_path / "log.db")
    await reopened.open()
    try:
        got = await reopened.get("g1")
        assert got is not None
        assert (got.state, got.decision) == ("committing", "committed")
        assert [b.name for b in got.branches] == ["a", "b"]
    finally:
        await reopened.close()


async def test_lazy_saves_are_durable_after_close(tmp_path: Path) -> None:
    log = SQLiteLog(tmp_path / "log.db")
    await log.open()
    log.save(record("g1"))
    log.save(record("g1", "aborted", "aborted", finished=True))
    await log.close()
    reopened = SQLiteLog(tmp_path / "log.db")
    await reopened.open()
    try:
        got = await reopened.get("g1")
        assert got is not None and got.state == "aborted"
    finally:
        await reopened.close()


async def test_unfinished_lists_only_what_recovery_must_see(tmp_path: Path) -> None:
    log = SQLiteLog(tmp_path / "log.db")
    await log.open()
    try:
        await log.force(record("g1", "committing", "committed"))
        await log.force(record("g2", "committed", "committed", finished=True))
        await log.force(record("g3", "preparing"))
        assert [r.gtid for r in await log.unfinished()] == ["g1", "g3"]
    finally:
        await log.close()


async def test_prune_removes_only_finished_records_older_than_the_cutoff(tmp_path: Path) -> None:
    log = SQLiteLog(tmp_path / "log.db")
    await log.open()
    try:
        await log.force(record("old-done", "committed", "committed", finished=True, updated_at=10.0))
        await log.force(record("old-pending", "committing", "committed", updated_at=10.0))
        await log.force(record("new-done", "committed", "committed", finished=True, updated_at=500.0))
        pruned = await log.prune(finished_before=100.0)
        assert pruned == 1
        assert await log.get("old-done") is None
        assert await log.get("old-pending") is not None
        assert await log.get("new-done") is not None
    finally:
        await log.close()


async def test_a_prune_goes_in_chunks_until_nothing_old_is_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_log, "_PRUNE_CHUNK_ROWS", 2)
    log = SQLiteLog(tmp_path / "log.db")
    await log.open()
    try:
        for n in range(5):
            await log.force(record(f"old-{n}", "committed", "committed", finished=True, updated_at=10.0))
        await log.force(record("old-pending", "committing", "committed", updated_at=10.0))
        pruned = await log.prune(finished_before=100.0)
    finally:
        await log.close()
    assert pruned == 5
    with sqlite3.connect(tmp_path / "log.db") as db:
        assert db.execute("SELECT gtid FROM transactions").fetchall() == [("old-pending",)]


async def test_idempotency_keys_are_loaded_for_recent_transactions(tmp_path: Path) -> None:
    log = SQLiteLog(tmp_path / "log.db")
    await log.open()
    try:
        await log.force(record("g1", idempotency_key="k1", request_hash="h1", created_at=50.0))
        await log.force(record("g2", idempotency_key="k2", request_hash="h2", created_at=150.0))
        keys = await log.idempotency_keys(since=100.0)
        assert set(keys) == {"k2"}
        assert keys["k2"].gtid == "g2" and keys["k2"].request_hash == "h2"
    finally:
        await log.close()


async def test_list_pages_by_gtid_and_filters_by_state(tmp_path: Path) -> None:
    log = SQLiteLog(tmp_path / "log.db")
    await log.open()
    try:
        for gtid, state in [("a", "active"), ("b", "aborted"), ("c", "active"), ("d", "active")]:
            log.save(record(gtid, state))
        await log.sync()
        first = await log.page("active", 2, None)
        assert [r.gtid for r in first] == ["a", "c"]
        assert [r.gtid for r in await log.page("active", 2, "c")] == ["d"]
    finally:
        await log.close()


async def test_many_concurrent_decisions_share_log_commits(tmp_path: Path) -> None:
    import asyncio

    log = SQLiteLog(tmp_path / "log.db")
    await log.open()
    try:
        await asyncio.gather(*(log.force(record(f"g{i:03}", "committing", "committed")) for i in range(100)))
        assert log.stats.durable_writes == 100
        assert log.stats.commits < 50
    finally:
        await log.close()
