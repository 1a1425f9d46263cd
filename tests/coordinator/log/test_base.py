"""What every decision log does alike (the contract of ``coordinator/log/_base.py``), on
SQLite and on PostgreSQL: durable, last write wins, only finished rows are pruned."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from coordinator.log import _postgres as postgres_log
from coordinator.log import _sqlite as sqlite_log
from coordinator.records import AuditEntry, BranchRecord
from tests.coordinator.log.conftest import Logs, record


async def test_a_forced_record_survives_reopening(logs: Logs) -> None:
    log = await logs.open()
    await log.force(record("g1", "committing", "committed", metadata={"k": [1, "two"]}))
    await logs.close(log)
    reopened = await logs.open()
    got = await reopened.get("g1")
    assert got is not None
    assert (got.state, got.decision, got.metadata) == ("committing", "committed", {"k": [1, "two"]})
    assert [(b.name, b.state, b.early, b.reason) for b in got.branches] == [
        ("a", "prepared", False, None),
        ("b", "read_only", True, "r"),
    ]


async def test_lazy_saves_are_durable_after_close(logs: Logs) -> None:
    log = await logs.open()
    log.save(record("g1"))
    log.save(record("g1", "aborted", "aborted", finished=True))
    await logs.close(log)
    reopened = await logs.open()
    got = await reopened.get("g1")
    assert got is not None and got.state == "aborted"


async def test_a_later_write_replaces_the_record_but_keeps_its_key_and_birth(logs: Logs) -> None:
    log = await logs.open()
    await log.force(record("g1", idempotency_key="k1", request_hash="h1", created_at=50.0))
    await log.force(record("g1", "committing", "committed", created_at=60.0, updated_at=70.0))
    got = await log.get("g1")
    assert got is not None
    assert (got.state, got.updated_at) == ("committing", 70.0)
    assert (got.idempotency_key, got.request_hash, got.created_at) == ("k1", "h1", 50.0)


async def test_get_of_an_unknown_gtid_is_none(logs: Logs) -> None:
    log = await logs.open()
    assert await log.get("nowhere") is None


async def test_unfinished_lists_only_what_recovery_must_see(logs: Logs) -> None:
    log = await logs.open()
    await log.force(record("g1", "committing", "committed"))
    await log.force(record("g2", "committed", "committed", finished=True))
    await log.force(record("g3", "preparing"))
    assert [r.gtid for r in await log.unfinished()] == ["g1", "g3"]


async def test_prune_removes_only_finished_records_older_than_the_cutoff(logs: Logs) -> None:
    log = await logs.open()
    await log.force(record("old-done", "committed", "committed", finished=True, updated_at=10.0))
    await log.force(record("old-pending", "committing", "committed", updated_at=10.0))
    await log.force(record("new-done", "committed", "committed", finished=True, updated_at=500.0))
    assert await log.prune(finished_before=100.0) == 1
    assert await log.get("old-done") is None
    assert await log.get("old-pending") is not None
    assert await log.get("new-done") is not None


async def test_a_prune_goes_in_chunks_until_nothing_old_is_left(logs: Logs, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_log, "_PRUNE_CHUNK_ROWS", 2)
    monkeypatch.setattr(postgres_log, "_PRUNE_CHUNK_ROWS", 2)
    log = await logs.open()
    for n in range(5):
        log.save(record(f"old-{n}", "committed", "committed", finished=True, updated_at=10.0))
    await log.force(record("old-pending", "committing", "committed", updated_at=10.0))
    assert await log.prune(finished_before=100.0) == 5
    assert [r.gtid for r in await log.page(None, 100, None)] == ["old-pending"]


async def test_idempotency_keys_are_loaded_for_recent_transactions(logs: Logs) -> None:
    log = await logs.open()
    await log.force(record("g1", idempotency_key="k1", request_hash="h1", created_at=50.0))
    await log.force(record("g2", idempotency_key="k2", request_hash="h2", created_at=150.0))
    keys = await log.idempotency_keys(since=100.0)
    assert set(keys) == {"k2"}
    assert (keys["k2"].gtid, keys["k2"].request_hash, keys["k2"].created_at) == ("g2", "h2", 150.0)


async def test_list_pages_by_gtid_and_filters_by_state(logs: Logs) -> None:
    log = await logs.open()
    for gtid, state in [("a", "active"), ("b", "aborted"), ("c", "active"), ("d", "active")]:
        log.save(record(gtid, state))
    await log.sync()
    assert [r.gtid for r in await log.page("active", 2, None)] == ["a", "c"]
    assert [r.gtid for r in await log.page("active", 2, "c")] == ["d"]
    assert [r.gtid for r in await log.page(None, 10, "b")] == ["c", "d"]


async def test_many_concurrent_decisions_share_log_commits(logs: Logs) -> None:
    log = await logs.open()
    await asyncio.gather(*(log.force(record(f"g{i:03}", "committing", "committed")) for i in range(100)))
    assert log.stats.durable_writes == 100
    assert log.stats.commits < 50
    assert len(await log.page(None, 200, None)) == 100


async def test_a_claimed_key_that_nobody_holds_is_the_claimers(logs: Logs) -> None:
    log = await logs.open()
    assert await log.claim(record("g1", idempotency_key="k1", request_hash="h1")) is None
    await log.sync()
    got = await log.get("g1")
    assert got is not None and got.idempotency_key == "k1"


async def test_a_joined_replica_is_listed_alive_with_its_url(logs: Logs) -> None:
    log = await logs.open("c7")
    (me,) = await log.nodes()
    assert (me.node_id, me.advertise_url, me.alive) == ("c7", "http://c7.test:7070", True)
    assert (await log.renew()).epoch == me.epoch


async def test_who_began_it_and_what_operators_settled_survive_reopening(logs: Logs) -> None:
    log = await logs.open()
    settled = dataclasses.replace(
        record("g1", "committed", "committed", finished=True),
        principal="orders-service",
        heuristic=True,
        branches=(
            BranchRecord("a", "abandoned", reason="abandoned by ops: gone", resolved_by="ops", resolved_at=7.5),
            BranchRecord("b", "aborted", heuristic="aborted", vote="yes", voted_at=5.0, acknowledged_at=6.25),
        ),
    )
    await log.force(settled)
    await logs.close(log)
    got = await (await logs.open()).get("g1")
    assert got is not None
    assert (got.principal, got.heuristic, got.branches) == ("orders-service", True, settled.branches)


async def test_the_heuristic_filter_lists_only_damaged_transactions(logs: Logs) -> None:
    log = await logs.open()
    await log.force(record("g1"))
    await log.force(dataclasses.replace(record("g2"), heuristic=True))
    assert [r.gtid for r in await log.page(None, 10, None, heuristic=True)] == ["g2"]
    assert [r.gtid for r in await log.page(None, 10, None, heuristic=False)] == ["g1"]


async def test_audit_entries_are_durable_and_paged_newest_first(logs: Logs) -> None:
    log = await logs.open()
    written = [
        await log.append_audit(AuditEntry(0, 10.0 + n, "ops", "abandon", f"why {n}", f"g{n}", "p", {"n": n}))
        for n in range(3)
    ]
    assert [w.id for w in written] == sorted({w.id for w in written})
    await logs.close(log)
    reopened = await logs.open()
    newest = await reopened.audit(2, None)
    assert [(a.gtid, a.reason, a.details) for a in newest] == [("g2", "why 2", {"n": 2}), ("g1", "why 1", {"n": 1})]
    assert [a.gtid for a in await reopened.audit(2, newest[-1].id)] == ["g0"]
