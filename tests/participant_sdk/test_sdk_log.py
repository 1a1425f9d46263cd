"""The local participant log: rows survive a reopen, live in memory, and finished
rows are forgotten after the retention."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from sdk_harness import Harness, branch_body

from participant_sdk.log import BranchState, ParticipantLog
from twopc.protocol import Vote
from twopc.testing import FakeClock


async def test_durable_and_lazy_rows_are_both_there_after_a_reopen(tmp_path: Path) -> None:
    log = ParticipantLog(tmp_path / "p.db")
    await log.open()
    await log.record("g1", "b", BranchState.PREPARED, durable=True, vote=Vote.YES, payload_hash="h")
    await log.record("g2", "b", BranchState.ABORTED, durable=False)
    await log.close()

    reopened = ParticipantLog(tmp_path / "p.db")
    await reopened.open()
    try:
        g1, g2 = reopened.get("g1", "b"), reopened.get("g2", "b")
    finally:
        await reopened.close()
    assert g1 is not None and (g1.status, g1.vote, g1.payload_hash) == (BranchState.PREPARED, Vote.YES, "h")
    assert g2 is not None and g2.status is BranchState.ABORTED


async def test_a_new_status_keeps_the_fields_it_does_not_change(tmp_path: Path) -> None:
    clock = FakeClock()
    log = ParticipantLog(tmp_path / "p.db", clock=clock.now)
    await log.open()
    try:
        await log.record("g1", "b", BranchState.PREPARED, durable=True, vote=Vote.YES, payload_hash="h")
        clock.advance(5)
        row = await log.record("g1", "b", BranchState.COMMITTED, durable=False)
    finally:
        await log.close()
    assert (row.vote, row.payload_hash) == (Vote.YES, "h")
    assert row.updated_at - row.created_at == 5


async def test_forgetting_finished_rows_keeps_prepared_ones_also_on_disk(tmp_path: Path) -> None:
    clock = FakeClock()
    log = ParticipantLog(tmp_path / "p.db", clock=clock.now)
    await log.open()
    await log.record("old-prepared", "b", BranchState.PREPARED, durable=True)
    await log.record("old-done", "b", BranchState.COMMITTED, durable=True)
    clock.advance(100)
    await log.record("new-done", "b", BranchState.ABORTED, durable=True)
    forgotten = log.forget_finished(older_than=clock.now() - 50)
    await log.close()

    assert forgotten == 1
    with sqlite3.connect(tmp_path / "p.db") as db:
        left = {gtid for (gtid,) in db.execute("SELECT gtid FROM branches")}
    assert left == {"old-prepared", "new-done"}


async def test_participant_forgets_finished_branches_after_the_retention(
    harness_factory: Callable[[], Harness],
) -> None:
    clock = FakeClock(time.time())
    h = harness_factory()
    h.clock = clock.now
    await h.start(retention=60.0)
    try:
        await h.prepare("done")
        await h.call("commit", branch_body("done"))
        await h.prepare("open")
        clock.advance(61)
        forgotten = h.participant.prune()
        assert forgotten == 1
        assert await h.state("done") == "unknown"
        assert await h.state("open") == "prepared"
    finally:
        await h.stop()
