"""The local participant log: rows survive a reopen; prepared and recent rows live in
memory, older finished ones only on disk; finished rows are forgotten after the
retention."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from sdk_harness import BRANCH, branch_body, prepare_body

from participant_sdk import log as participant_log
from participant_sdk.log import ParticipantLog, RecordState
from participant_sdk.testing import ParticipantTestServer
from twopc_core.protocol import Vote
from twopc_core.testing import FakeClock


async def test_durable_and_lazy_rows_are_both_there_after_a_reopen(tmp_path: Path) -> None:
    log = ParticipantLog(tmp_path / "p.db")
    await log.open()
    await log.record("g1", "b", RecordState.PREPARED, durable=True, vote=Vote.YES, payload_hash="h")
    await log.record("g2", "b", RecordState.ABORTED, durable=False)
    await log.close()

    reopened = ParticipantLog(tmp_path / "p.db")
    await reopened.open()
    try:
        g1, g2 = reopened.get("g1", "b"), reopened.get("g2", "b")
    finally:
        await reopened.close()
    assert g1 is not None and (g1.status, g1.vote, g1.payload_hash) == (RecordState.PREPARED, Vote.YES, "h")
    assert g2 is not None and g2.status is RecordState.ABORTED


async def test_a_new_status_keeps_the_fields_it_does_not_change(tmp_path: Path) -> None:
    clock = FakeClock()
    log = ParticipantLog(tmp_path / "p.db", clock=clock.now)
    await log.open()
    try:
        await log.record("g1", "b", RecordState.PREPARED, durable=True, vote=Vote.YES, payload_hash="h")
        clock.advance(5)
        row = await log.record("g1", "b", RecordState.COMMITTED, durable=False)
    finally:
        await log.close()
    assert (row.vote, row.payload_hash) == (Vote.YES, "h")
    assert row.updated_at - row.created_at == 5


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(time.time())


@pytest.fixture
async def clocked(
    harness_factory: Callable[[], ParticipantTestServer], clock: FakeClock
) -> AsyncIterator[ParticipantTestServer]:
    """A participant service on ``clock``, with a retention of a minute."""
    h = harness_factory()
    h.clock = clock.now
    await h.start(retention=60.0)
    yield h
    await h.stop()


async def test_participant_forgets_finished_branches_after_the_retention(
    clocked: ParticipantTestServer, clock: FakeClock
) -> None:
    await clocked.prepare("done")
    await clocked.call("commit", branch_body("done"))
    await clocked.prepare("open")
    clock.advance(61)
    forgotten = await clocked.participant.prune()
    assert forgotten == 1
    assert await clocked.status("done") == "unknown"
    assert await clocked.status("open") == "prepared"


async def test_a_finished_row_leaves_memory_but_is_still_found_on_disk(tmp_path: Path) -> None:
    clock = FakeClock()
    log = ParticipantLog(tmp_path / "p.db", clock=clock.now, keep_in_memory=60)
    await log.open()
    try:
        await log.record("g-old", "b", RecordState.COMMITTED, durable=True, vote=Vote.YES, payload_hash="h")
        clock.advance(61)
        await log.record("g-new", "b", RecordState.ABORTED, durable=True)  # a write evicts the stale row
        in_memory = log.get("g-old", "b")
        found = await log.lookup("g-old", "b")
    finally:
        await log.close()
    assert in_memory is None
    assert found is not None and (found.status, found.payload_hash) == (RecordState.COMMITTED, "h")
    assert log.disk_reads == 1


async def test_prepared_rows_never_leave_memory(tmp_path: Path) -> None:
    clock = FakeClock()
    log = ParticipantLog(tmp_path / "p.db", clock=clock.now, keep_in_memory=60)
    await log.open()
    try:
        await log.record("g-open", "b", RecordState.PREPARED, durable=True)
        clock.advance(3600)
        await log.record("g-new", "b", RecordState.ABORTED, durable=True)
        row = log.get("g-open", "b")
        in_doubt = [r.gtid for r in log.prepared()]
    finally:
        await log.close()
    assert row is not None and row.status is RecordState.PREPARED
    assert in_doubt == ["g-open"]


async def test_a_finished_row_stays_in_memory_while_its_deadline_is_ahead(tmp_path: Path) -> None:
    clock = FakeClock()
    log = ParticipantLog(tmp_path / "p.db", clock=clock.now, keep_in_memory=60)
    await log.open()
    try:
        await log.record("g-long", "b", RecordState.ABORTED, durable=True, deadline=clock.now() + 600)
        clock.advance(61)
        await log.record("g-new", "b", RecordState.ABORTED, durable=True)
        kept = log.get("g-long", "b")
        clock.advance(600)
        await log.record("g-newer", "b", RecordState.ABORTED, durable=True)
        dropped = log.get("g-long", "b")
    finally:
        await log.close()
    assert kept is not None
    assert dropped is None


async def test_a_lookup_with_a_live_deadline_does_not_read_the_disk(tmp_path: Path) -> None:
    clock = FakeClock()
    log = ParticipantLog(tmp_path / "p.db", clock=clock.now)
    await log.open()
    try:
        fresh = await log.lookup("g-unknown", "b", deadline=clock.now() + 30)
        reads_with_live_deadline = log.disk_reads
        late = await log.lookup("g-unknown", "b", deadline=clock.now() - 1)
    finally:
        await log.close()
    assert (fresh, late) == (None, None)
    assert reads_with_live_deadline == 0
    assert log.disk_reads == 1


async def test_a_reopen_loads_prepared_and_recent_rows_only(tmp_path: Path) -> None:
    clock = FakeClock()
    log = ParticipantLog(tmp_path / "p.db", clock=clock.now, keep_in_memory=60)
    await log.open()
    await log.record("g-open", "b", RecordState.PREPARED, durable=True)
    await log.record("g-old", "b", RecordState.COMMITTED, durable=True)
    clock.advance(100)
    await log.record("g-recent", "b", RecordState.COMMITTED, durable=True)
    await log.close()

    reopened = ParticipantLog(tmp_path / "p.db", clock=clock.now, keep_in_memory=60)
    await reopened.open()
    try:
        loaded = {row.gtid for row in reopened}
        old = await reopened.lookup("g-old", "b")
    finally:
        await reopened.close()
    assert loaded == {"g-open", "g-recent"}
    assert old is not None and old.status is RecordState.COMMITTED


async def test_a_log_written_before_rows_had_a_deadline_opens_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE branches (gtid TEXT NOT NULL, branch TEXT NOT NULL, status TEXT NOT NULL, vote TEXT,"
            " reason TEXT, payload_hash TEXT, created_at REAL NOT NULL, updated_at REAL NOT NULL,"
            " heuristic INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (gtid, branch)) WITHOUT ROWID"
        )
        db.execute("INSERT INTO branches VALUES ('g1', 'b', 'prepared', 'yes', NULL, 'h', 1.0, 1.0, 0)")
    log = ParticipantLog(path)
    await log.open()
    try:
        await log.record("g2", "b", RecordState.PREPARED, durable=True, deadline=5.0)
        old, new = log.get("g1", "b"), log.get("g2", "b")
    finally:
        await log.close()
    assert old is not None and (old.status, old.deadline) == (RecordState.PREPARED, None)
    assert new is not None and new.deadline == 5.0


async def test_calls_repeated_after_a_branch_left_memory_answer_as_the_first(
    clocked: ParticipantTestServer, clock: FakeClock
) -> None:
    first = await clocked.prepare("done", {"n": 1})
    await clocked.call("commit", branch_body("done"))
    clock.advance(120)  # past the deadline and out of memory
    await clocked.prepare("other")  # a write: evicts the stale row
    assert clocked.participant.log.get("done", BRANCH) is None
    again = await clocked.call("prepare", {**prepare_body("done", {"n": 1}), "deadline": clock.now() - 90})
    commit_again = await clocked.call("commit", branch_body("done"))
    assert again == first == (200, {"vote": "yes", "reason": None})
    assert commit_again[0] == 200 and commit_again[1]["status"] == "committed"
    assert clocked.resource.calls_of("prepare") == [("done", BRANCH), ("other", BRANCH)]


async def test_forgetting_deletes_old_finished_rows_in_chunks_and_keeps_prepared_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(participant_log, "_FORGET_CHUNK_ROWS", 3)
    clock = FakeClock()
    log = ParticipantLog(tmp_path / "p.db", clock=clock.now)
    await log.open()
    for n in range(10):
        await log.record(f"old-{n}", "b", RecordState.COMMITTED, durable=False)
    await log.record("old-open", "b", RecordState.PREPARED, durable=True)
    clock.advance(100)
    await log.record("new-done", "b", RecordState.COMMITTED, durable=True)
    forgotten = await log.forget_finished(older_than=clock.now() - 50)
    await log.close()

    assert forgotten == 10
    with sqlite3.connect(tmp_path / "p.db") as db:
        left = {gtid for (gtid,) in db.execute("SELECT gtid FROM branches")}
    assert left == {"old-open", "new-done"}


async def test_a_new_one_phase_commit_with_a_live_deadline_reads_no_disk_and_a_late_repeat_does(
    clocked: ParticipantTestServer, clock: FakeClock
) -> None:
    body = branch_body("solo", one_phase=True, payload={"n": 1}, deadline=clock.now() + 30)
    first = await clocked.call("commit", body)
    assert clocked.participant.log.disk_reads == 0
    clock.advance(120)  # past the deadline and out of memory
    # A write (which evicts the stale row) of a branch whose deadline is ahead.
    await clocked.call("prepare", {**prepare_body("other"), "deadline": clock.now() + 30})
    again = await clocked.call("commit", body)
    assert first == again == (200, {"status": "committed", "reason": None})
    assert clocked.participant.log.disk_reads == 1
    assert clocked.resource.calls_of("prepare") == [("solo", BRANCH), ("other", BRANCH)]
