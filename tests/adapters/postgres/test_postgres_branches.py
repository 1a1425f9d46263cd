"""Work at prepare on a real PostgreSQL: prepare makes a prepared transaction with the
participant's gid, commit and abort finish it, repeats are answered without redoing."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from pg_harness import NAME, PgService, items_handler, prepare_by_hand, prepared_gids, rows

from adapters.postgres import MARKS_TABLE, BranchLost, BranchTransactionEnded, PostgresResource
from twopc_core.protocol import BranchStatus


async def test_prepare_holds_the_work_in_a_prepared_transaction_and_commit_applies_it(
    service: PgService, database: str
) -> None:
    status, body = await service.prepare("g1", {"id": "a", "note": "first"})
    assert (status, body) == (200, {"vote": "yes", "reason": None})

    assert await prepared_gids(database) == [f"twopc:{NAME}:g1:{NAME}"]
    assert await rows(database) == {}  # invisible until committed

    assert await service.commit("g1") == (200, {"status": "committed", "reason": None})
    assert await rows(database) == {"a": "first"}
    assert await prepared_gids(database) == []


async def test_abort_rolls_the_prepared_transaction_back(service: PgService, database: str) -> None:
    await service.prepare("g1", {"id": "a", "note": "doomed"})

    assert (await service.abort("g1"))[0] == 200

    assert await prepared_gids(database) == []
    assert await rows(database) == {}
    assert await service.status("g1") == "aborted"


async def test_a_repeated_commit_is_answered_without_applying_twice(service: PgService, database: str) -> None:
    await service.prepare("g1", {"id": "a", "note": "once"})
    await service.commit("g1")

    # The resource itself, asked again (as after a crash before the log row was written):
    await service.resource.commit("g1", NAME)
    assert (await service.commit("g1"))[1]["status"] == "committed"
    assert await rows(database) == {"a": "once"}


async def test_commit_of_a_branch_rolled_back_behind_our_back_is_refused_not_faked(
    service: PgService, database: str
) -> None:
    await service.prepare("g1", {"id": "a", "note": "x"})
    async with await psycopg.AsyncConnection.connect(database, autocommit=True) as conn:
        await conn.tpc_rollback(service.gid("g1"))

    status, body = await service.commit("g1")

    assert status == 503
    assert body["error"]["code"] == "resource_error"
    assert "neither prepared nor committed" in body["error"]["message"]
    assert await service.status("g1") == "prepared"  # still owed a commit: an operator must look
    with pytest.raises(BranchLost):
        await service.resource.commit("never-prepared", NAME)


async def test_abort_is_idempotent_but_never_undoes_a_commit(service: PgService, database: str) -> None:
    await service.resource.abort("unknown", NAME)  # never prepared: nothing to drop
    await service.prepare("g1", {"id": "a", "note": "kept"})
    await service.commit("g1")

    with pytest.raises(BranchLost, match="already committed"):
        await service.resource.abort("g1", NAME)
    assert await rows(database) == {"a": "kept"}


async def test_a_no_vote_rolls_the_branch_back(service: PgService, database: str) -> None:
    status, body = await service.prepare("g1", {"vote": "no"})

    assert (status, body) == (200, {"vote": "no", "reason": "asked to vote no"})
    assert await prepared_gids(database) == []
    assert await rows(database) == {}


async def test_a_failing_statement_votes_no_with_the_error_and_leaves_the_pool_usable(
    service: PgService, database: str
) -> None:
    await service.prepare("g1", {"id": "dup", "note": "first"})
    await service.commit("g1")

    _, body = await service.prepare("g2", {"id": "dup", "note": "second"})

    assert body["vote"] == "no" and "UniqueViolation" in body["reason"]
    assert await prepared_gids(database) == []
    for n in range(6):  # more branches than the pool has connections
        assert (await service.prepare(f"h{n}", {"id": f"h{n}", "note": "ok"}))[1]["vote"] == "yes"
        await service.commit(f"h{n}")
    assert len(await rows(database)) == 7


async def test_a_read_only_branch_prepares_nothing(service: PgService, database: str) -> None:
    assert (await service.prepare("g1", {"read_only": True}))[1]["vote"] == "read_only"
    assert await prepared_gids(database) == []


async def test_a_bad_payload_votes_no_naming_the_problem(service: PgService, database: str) -> None:
    status, body = await service.prepare("g1", {"id": "a"})  # no note

    assert status == 200 and body["vote"] == "no"
    assert "note" in body["reason"]
    assert await prepared_gids(database) == []


async def test_one_phase_commit_applies_once(service: PgService, database: str) -> None:
    status, body = await service.commit("g1", one_phase=True, payload={"id": "a", "note": "1pc"})
    assert (status, body["status"]) == (200, "committed")
    assert await prepared_gids(database) == []

    # A repeat of the same gid at the resource (its log row lost) applies nothing again.
    again = await service.resource.prepare("g1", NAME, {"id": "a", "note": "1pc"})
    assert again.vote == "no"
    assert await rows(database) == {"a": "1pc"}


async def test_a_gid_that_already_committed_cannot_be_prepared_again(service: PgService, database: str) -> None:
    await service.prepare("g1", {"id": "a", "note": "first"})
    await service.commit("g1")

    result = await service.resource.prepare("g1", NAME, {"id": "b", "note": "second"})

    assert result.vote == "no" and "already committed" in (result.reason or "")
    assert await rows(database) == {"a": "first"}
    assert await prepared_gids(database) == []


async def test_a_branch_waiting_too_long_for_a_row_lock_fails_instead_of_waiting_forever(
    service: PgService, database: str
) -> None:
    await service.prepare("g0", {"id": "hot", "note": "row"})
    await service.commit("g0")
    await service.prepare("g1", {"update": "hot"})  # prepared: holds the row's lock until phase 2

    impatient = PostgresResource(database, NAME, handler=service.resource.handler, pool_size=1, lock_timeout_ms=200)
    await impatient.start()
    try:
        # The SDK turns this into a NO vote (see the SDK's prepare).
        with pytest.raises(psycopg.errors.LockNotAvailable):
            await impatient.prepare("g2", NAME, {"update": "hot"})
    finally:
        await impatient.close()

    assert await prepared_gids(database) == [service.gid("g1")]


async def test_health_counts_our_prepared_transactions_and_the_oldest_age(service: PgService, database: str) -> None:
    assert (await service.resource.prepared_stats()).as_dict() == {"count": 0, "oldest_age_seconds": None}
    await service.prepare("g1", {"id": "a", "note": "x"})
    await service.prepare("g2", {"id": "b", "note": "y"})
    await prepare_by_hand(database, "someone-else:g3")

    stats = await service.resource.prepared_stats()

    assert stats.count == 2
    assert stats.oldest_age_seconds is not None and 0 <= stats.oldest_age_seconds < 30
    assert [b.gtid for b in await service.resource.prepared()] == ["g1", "g2"]


async def test_a_handler_that_ends_the_transaction_itself_is_refused_and_nothing_is_marked(
    service: PgService, database: str
) -> None:
    async def committing_handler(conn: psycopg.AsyncConnection, gtid: str, branch: str, payload: Any) -> None:
        await conn.execute("INSERT INTO items (id, note) VALUES ('early', 'committed by the handler')")
        await conn.execute("COMMIT")

    resource = PostgresResource(database, NAME, handler=committing_handler, pool_size=1)
    await resource.start()
    try:
        # The SDK turns this into a NO vote (see the SDK's prepare).
        with pytest.raises(BranchTransactionEnded, match="committed or rolled back"):
            await resource.prepare("g1", NAME, {})
    finally:
        await resource.close()

    async with await psycopg.AsyncConnection.connect(database, autocommit=True) as conn:
        cursor = await conn.execute(f"SELECT count(*) FROM {MARKS_TABLE}")
        marks = await cursor.fetchone()
    assert marks == (0,)
    assert await prepared_gids(database) == []


async def test_a_gid_prefix_with_a_backslash_is_quoted_not_interpreted(database: str) -> None:
    prefix = "odd\\prefix:"
    resource = PostgresResource(database, NAME, handler=items_handler, gid_prefix=prefix, pool_size=1)
    await resource.start()
    try:
        vote = await resource.prepare("g1", NAME, {"id": "q", "note": "quoted"})
        held = await prepared_gids(database)
        await resource.commit("g1", NAME)
        again = await resource.prepare("g1", NAME, {"id": "q2", "note": "again"})
    finally:
        await resource.close()
    assert vote.vote == "yes"
    assert held == [f"{prefix}g1:{NAME}"]
    assert again.vote == "no" and "already committed" in (again.reason or "")
    assert await rows(database) == {"q": "quoted"}


async def test_the_database_holds_the_branch_state_prepared_then_committed(service: PgService, database: str) -> None:
    resource = service.resource
    assert resource.holds_branch_state
    assert await resource.branch_status("g1", NAME) is BranchStatus.UNKNOWN

    await service.prepare("g1", {"id": "a", "note": "x"})
    assert await resource.branch_status("g1", NAME) is BranchStatus.PREPARED

    await service.commit("g1")
    assert await resource.branch_status("g1", NAME) is BranchStatus.COMMITTED


async def test_a_rolled_back_branch_is_unknown_to_the_database(service: PgService, database: str) -> None:
    await service.prepare("g1", {"id": "a", "note": "x"})
    await service.abort("g1")

    assert await service.resource.branch_status("g1", NAME) is BranchStatus.UNKNOWN
