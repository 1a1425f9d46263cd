"""Group commit for SQLite: one writer task, one transaction and one commit per batch."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import pytest

from twopc_core.groupcommit import GroupCommitter, acquire_shared, open_sqlite, release_shared
from twopc_core.testing import ManualTimer, ScheduledCall, wait_until

SCHEMA = "CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)"
INSERT = "INSERT INTO t (k, v) VALUES (?, ?)"
UPDATE = "UPDATE t SET v = ? WHERE k = ?"


@pytest.fixture
async def db(tmp_path: Path) -> str:
    path = str(tmp_path / "log.db")
    conn = await open_sqlite(path)
    await conn.execute(SCHEMA)
    await conn.close()
    return path


@pytest.fixture
async def committer(db: str) -> AsyncIterator[GroupCommitter]:
    committer = GroupCommitter(db)
    await committer.start()
    yield committer
    await committer.close()


async def rows(path: str) -> list[tuple[int, str]]:
    """What another connection sees."""
    async with aiosqlite.connect(path) as reader, reader.execute("SELECT k, v FROM t ORDER BY k") as cursor:
        return [(k, v) for k, v in await cursor.fetchall()]


async def test_durable_write_is_visible_to_another_connection(committer: GroupCommitter, db: str) -> None:
    await committer.write_durable(INSERT, (1, "a"))
    assert await rows(db) == [(1, "a")]
    assert committer.stats.commits == 1
    assert committer.stats.durable_writes == 1


async def test_concurrent_durable_writes_share_commits(committer: GroupCommitter, db: str) -> None:
    writes = 200
    await asyncio.gather(*(committer.write_durable(INSERT, (k, f"v{k}")) for k in range(writes)))
    assert await rows(db) == [(k, f"v{k}") for k in range(writes)]
    assert committer.stats.durable_writes == writes
    assert committer.stats.commits < writes
    assert committer.stats.durable_per_commit > 1


async def test_a_write_made_one_turn_after_another_joins_its_commit(committer: GroupCommitter, db: str) -> None:
    # As a batch of votes arrives: the first decision wakes the writer, the rest follow
    # a turn of the loop later, and all of them should share the one commit.
    async def one_turn_later() -> None:
        await asyncio.sleep(0)
        await committer.write_durable(INSERT, (2, "b"))

    await asyncio.gather(committer.write_durable(INSERT, (1, "a")), one_turn_later())
    assert await rows(db) == [(1, "a"), (2, "b")]
    assert committer.stats.commits == 1


async def test_max_batch_bounds_the_writes_in_one_commit(db: str) -> None:
    committer = GroupCommitter(db, max_batch=5)
    await committer.start()
    try:
        await asyncio.gather(*(committer.write_durable(INSERT, (k, "v")) for k in range(20)))
    finally:
        await committer.close()
    assert len(await rows(db)) == 20
    assert committer.stats.commits >= 4


async def test_writes_are_applied_in_the_order_they_were_queued(committer: GroupCommitter, db: str) -> None:
    # One batch: an update before its row exists changes nothing; one after does.
    await asyncio.gather(
        committer.write_durable(UPDATE, ("early", 1)),
        committer.write_durable(INSERT, (1, "a")),
        committer.write_durable(INSERT, (2, "b")),
        committer.write_durable(UPDATE, ("late", 2)),
    )
    assert committer.stats.commits == 1
    assert await rows(db) == [(1, "a"), (2, "late")]


async def test_a_failing_statement_fails_only_its_own_waiter(committer: GroupCommitter, db: str) -> None:
    await committer.write_durable(INSERT, (1, "a"))
    results = await asyncio.gather(
        committer.write_durable(INSERT, (2, "b")),
        committer.write_durable(INSERT, (1, "duplicate")),
        committer.write_durable(INSERT, (3, "c")),
        return_exceptions=True,
    )
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], sqlite3.IntegrityError)
    assert await rows(db) == [(1, "a"), (2, "b"), (3, "c")]
    assert committer.stats.durable_writes == 3, "the failed write was counted as durable"


async def test_writes_after_close_are_refused(committer: GroupCommitter) -> None:
    await committer.close()
    with pytest.raises(RuntimeError, match="not running"):
        await committer.write_durable(INSERT, (1, "a"))
    with pytest.raises(RuntimeError, match="not running"):
        committer.write(INSERT, (1, "a"))


async def test_writer_keeps_working_after_a_failed_batch(committer: GroupCommitter, db: str) -> None:
    with pytest.raises(sqlite3.IntegrityError):
        await committer.write_durable(INSERT, (1, None))  # NOT NULL
    await committer.write_durable(INSERT, (2, "b"))
    assert await rows(db) == [(2, "b")]


async def test_write_durable_many_commits_together(db: str) -> None:
    # Even with one entry per batch, the statements of one call are never cut apart.
    committer = GroupCommitter(db, max_batch=1)
    await committer.start()
    try:
        await committer.write_durable_many([(INSERT, (1, "a")), (INSERT, (2, "b")), (UPDATE, ("c", 1))])
        assert committer.stats.commits == 1
        assert await rows(db) == [(1, "c"), (2, "b")]
        with pytest.raises(sqlite3.IntegrityError):
            await committer.write_durable_many([(INSERT, (10, "x")), (INSERT, (11, "y")), (INSERT, (10, "dup"))])
        assert await rows(db) == [(1, "c"), (2, "b")], "part of a failed write_durable_many was kept"
    finally:
        await committer.close()


async def test_write_durable_many_of_nothing_returns_at_once(committer: GroupCommitter) -> None:
    await committer.write_durable_many([])
    assert committer.stats.commits == 0


async def test_lazy_writes_ride_along_with_the_next_durable_write(committer: GroupCommitter, db: str) -> None:
    committer.write(INSERT, (1, "lazy"))
    await committer.write_durable(INSERT, (2, "forced"))
    assert await rows(db) == [(1, "lazy"), (2, "forced")]
    assert committer.stats.commits == 1
    assert committer.stats.durable_writes == 1


async def test_lazy_write_is_committed_without_anyone_waiting(committer: GroupCommitter, db: str) -> None:
    committer.write(INSERT, (1, "lazy"))
    await wait_until(lambda: committer.stats.commits == 1, timeout=5, message="the lazy write to commit")
    assert await rows(db) == [(1, "lazy")]


#: How long a patient committer's lazy writes wait: longer than any test runs.
PATIENCE = 60.0


@pytest.fixture
def timer() -> ManualTimer:
    return ManualTimer()


@pytest.fixture
async def patient(db: str, timer: ManualTimer) -> AsyncIterator[GroupCommitter]:
    """A committer whose lazy writes wait a minute for a forced write, on a timer that
    fires only when the test says."""
    committer = GroupCommitter(db, lazy_delay=PATIENCE, timer=timer)
    await committer.start()
    yield committer
    await committer.close()


async def lazy_timer_set(timer: ManualTimer) -> ScheduledCall:
    """The one call the writer sets once it has only lazy writes left."""
    [call] = await wait_until(lambda: timer.pending, timeout=5, message="the writer to set the lazy timer")
    return call


async def test_a_lazy_write_waits_for_a_forced_write_to_ride_with(
    patient: GroupCommitter, timer: ManualTimer, db: str
) -> None:
    patient.write(INSERT, (1, "lazy"))
    call = await lazy_timer_set(timer)
    assert call.delay == PATIENCE
    assert patient.stats.commits == 0
    await patient.write_durable(INSERT, (2, "forced"))
    assert patient.stats.commits == 1
    assert await rows(db) == [(1, "lazy"), (2, "forced")]


async def test_a_lazy_write_is_committed_when_its_timer_fires(
    patient: GroupCommitter, timer: ManualTimer, db: str
) -> None:
    patient.write(INSERT, (1, "lazy"))
    call = await lazy_timer_set(timer)
    assert timer.advance(call.delay) == 1
    await wait_until(lambda: patient.stats.commits == 1, timeout=5, message="the lazy write to commit")
    assert await rows(db) == [(1, "lazy")]
    assert patient.stats.durable_writes == 0


async def test_lazy_writes_left_after_a_forced_batch_wait_for_the_next_one(
    patient: GroupCommitter, timer: ManualTimer, db: str
) -> None:
    # Another connection holds the write lock, so the forced batch stays in flight
    # while the lazy write is queued behind it.
    blocker = await aiosqlite.connect(db, isolation_level=None)
    try:
        await blocker.execute("BEGIN IMMEDIATE")
        forced = asyncio.create_task(patient.write_durable(INSERT, (1, "forced")))
        await wait_until(lambda: patient._committing, timeout=5, message="the writer to take the forced batch")
        patient.write(INSERT, (2, "lazy"))
        await blocker.execute("ROLLBACK")
        await asyncio.wait_for(forced, timeout=10)
    finally:
        await blocker.close()
    call = await lazy_timer_set(timer)
    assert patient.stats.commits == 1
    assert await rows(db) == [(1, "forced")]
    timer.advance(call.delay)
    await wait_until(lambda: patient.stats.commits == 2, timeout=5, message="the lazy write to commit")
    assert await rows(db) == [(1, "forced"), (2, "lazy")]


async def test_close_calls_off_the_lazy_timer_and_commits_what_waited(db: str, timer: ManualTimer) -> None:
    committer = GroupCommitter(db, lazy_delay=PATIENCE, timer=timer)
    await committer.start()
    committer.write(INSERT, (1, "lazy"))
    call = await lazy_timer_set(timer)
    await committer.close()
    assert call.cancelled()
    assert await rows(db) == [(1, "lazy")]


async def test_close_drains_lazy_writes(db: str) -> None:
    committer = GroupCommitter(db)
    await committer.start()
    for k in range(50):
        committer.write(INSERT, (k, "lazy"))
    await committer.close()
    assert len(await rows(db)) == 50


async def test_cancelled_durable_write_is_still_committed(committer: GroupCommitter, db: str) -> None:
    # Once queued, a write belongs to a batch: cancelling its caller does not tear it out.
    task = asyncio.create_task(committer.write_durable(INSERT, (1, "a")))
    await asyncio.sleep(0)  # one turn of the loop: the task queues its write
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await committer.flush()
    assert await rows(db) == [(1, "a")]


async def test_flush_commits_queued_lazy_writes(committer: GroupCommitter, db: str) -> None:
    committer.write(INSERT, (1, "a"))
    committer.write(INSERT, (2, "b"))
    await committer.flush()
    assert await rows(db) == [(1, "a"), (2, "b")]
    assert committer.stats.durable_writes == 0, "the flush marker counted as a durable write"


async def test_flush_with_nothing_queued_costs_no_commit(committer: GroupCommitter) -> None:
    await committer.flush()
    assert committer.stats.commits == 0


async def test_flush_waits_for_a_batch_already_being_committed(committer: GroupCommitter, db: str) -> None:
    # Another connection holds the write lock, so the writer's batch stays in flight.
    blocker = await aiosqlite.connect(db, isolation_level=None)
    try:
        await blocker.execute("BEGIN IMMEDIATE")
        committer.write(INSERT, (1, "a"))
        await wait_until(lambda: not committer._queue, timeout=5, message="the writer to take the batch")
        flushing = asyncio.create_task(committer.flush())
        for _ in range(5):  # turns of the loop in which a flush that waits for nothing returns
            await asyncio.sleep(0)
        assert not flushing.done(), "flush returned while the batch was not committed"
        await blocker.execute("ROLLBACK")
        await asyncio.wait_for(flushing, timeout=10)
        assert await rows(db) == [(1, "a")]
    finally:
        await blocker.close()


async def test_users_of_one_file_share_its_writer_and_commit_together(db: str) -> None:
    first = await acquire_shared(db)
    second = await acquire_shared(db)
    try:
        assert first is second
        first.write(INSERT, (1, "lazy, from one user"))
        await second.write_durable(INSERT, (2, "forced, from the other"))

        assert await rows(db) == [(1, "lazy, from one user"), (2, "forced, from the other")]
        assert first.stats.commits == 1
    finally:
        await release_shared(first)
        await release_shared(second)


async def test_a_shared_writer_stays_open_until_its_last_user_is_done(db: str) -> None:
    first = await acquire_shared(db)
    second = await acquire_shared(db)
    second.write(INSERT, (1, "queued by the user that leaves"))

    await release_shared(second)

    assert await rows(db) == [(1, "queued by the user that leaves")]  # flushed when it left
    await first.write_durable(INSERT, (2, "still served"))
    await release_shared(first)
    with pytest.raises(RuntimeError):
        first.write(INSERT, (3, "after the last user"))
    later = await acquire_shared(db)
    await release_shared(later)
    assert later is not first  # a later user gets a writer of its own
