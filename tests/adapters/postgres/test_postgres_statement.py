"""Work at prepare as one statement on a real PostgreSQL: BEGIN, the statement, the mark
and PREPARE TRANSACTION go as one query; what the database refuses is a NO vote with
its reason; a client killed while its prepare waits prepares nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest
from pg_harness import NAME, PgService, items_statement, prepared_gids, rows

from adapters.postgres import PostgresResource
from participant_sdk import PrepareResult
from participant_sdk.testing import StubCoordinator
from twopc_core.protocol import Vote
from twopc_core.testing import wait_until


@pytest.fixture
async def statements(
    tmp_path: Path, database: str, coordinator: tuple[StubCoordinator, str]
) -> AsyncIterator[PgService]:
    svc = await PgService(tmp_path, database, coordinator[1], handler=None, statement=items_statement).start()
    yield svc
    await svc.stop()


async def test_work_as_one_statement_is_prepared_then_committed(statements: PgService, database: str) -> None:
    assert await statements.prepare("g1", {"id": "a", "note": "one trip"}) == (200, {"vote": "yes", "reason": None})
    assert await prepared_gids(database) == [f"twopc:{NAME}:g1:{NAME}"]
    assert await rows(database) == {}

    assert (await statements.commit("g1"))[1]["status"] == "committed"
    assert await rows(database) == {"a": "one trip"}


async def test_a_statement_the_database_refuses_votes_no_with_the_servers_reason(
    statements: PgService, database: str
) -> None:
    await statements.prepare("g1", {"id": "a", "note": "first"})
    await statements.commit("g1")

    status, body = await statements.prepare("g2", {"id": "a", "note": "again"})

    assert (status, body["vote"]) == (200, "no")
    assert "duplicate key value violates unique constraint" in body["reason"]
    assert await prepared_gids(database) == []


async def test_a_payload_refused_before_the_database_votes_as_the_statement_says(statements: PgService) -> None:
    assert await statements.prepare("g1", {"vote": "no"}) == (200, {"vote": "no", "reason": "asked to vote no"})


async def test_a_gid_already_committed_is_refused_by_its_mark(statements: PgService, database: str) -> None:
    await statements.prepare("g1", {"id": "a", "note": "once"})
    await statements.commit("g1")

    again = await statements.resource.prepare("g1", NAME, {"id": "b", "note": "twice"})

    assert again.vote is Vote.NO and "already committed" in (again.reason or "")
    assert await rows(database) == {"a": "once"}


async def test_a_statement_that_waits_past_the_lock_timeout_prepares_nothing(database: str) -> None:
    resource = PostgresResource(database, NAME, statement=items_statement, lock_timeout_ms=200, pool_size=2)
    await resource.start()
    try:
        assert (await resource.prepare("g0", NAME, {"id": "a", "note": "there"})).vote is Vote.YES
        await resource.commit("g0", NAME)
        assert (await resource.prepare("g1", NAME, {"update": "a"})).vote is Vote.YES  # holds the row's lock
        with pytest.raises(psycopg.errors.LockNotAvailable):
            await resource.prepare("g2", NAME, {"update": "a"})
        await resource.abort("g1", NAME)
        assert await prepared_gids(database) == []
    finally:
        await resource.close()


def test_work_given_as_a_handler_and_a_statement_is_refused(database: str) -> None:
    async def handler(*_: object) -> None:
        return None

    with pytest.raises(ValueError, match="not both"):
        PostgresResource(database, NAME, handler=handler, statement=items_statement)


async def test_a_statement_that_votes_yes_without_sql_is_a_programming_error(database: str) -> None:
    resource = PostgresResource(database, NAME, statement=lambda *_: PrepareResult.yes(), pool_size=1)
    await resource.start()
    try:
        with pytest.raises(TypeError, match="votes YES by giving its SQL"):
            await resource.prepare("g1", NAME, {})
    finally:
        await resource.close()


_REPOSITORY = Path(__file__).resolve().parents[3]
_PREPARE_IN_A_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from adapters.postgres import PostgresResource
    from tests.adapters.postgres.pg_harness import items_statement

    async def main() -> None:
        resource = PostgresResource(sys.argv[1], "pg1", statement=items_statement, lock_timeout_ms=60000)
        await resource.start()
        print("started", flush=True)
        await resource.prepare("g-killed", "pg1", {"update": "locked"})

    asyncio.run(main())
    """
)


async def _sessions_waiting_for_a_lock(dsn: str) -> int:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        row = await cursor.fetchone()
        return int(row[0]) if row else 0


async def test_a_prepare_whose_client_is_killed_while_it_waits_for_a_lock_prepares_nothing(database: str) -> None:
    holder = await psycopg.AsyncConnection.connect(database)
    try:
        await holder.execute("INSERT INTO items VALUES ('locked', 'by the test')")
        await holder.commit()
        await holder.execute("UPDATE items SET note = 'held' WHERE id = 'locked'")  # holds the row lock
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _PREPARE_IN_A_CHILD,
            database,
            cwd=_REPOSITORY,
            env={**os.environ, "PYTHONPATH": str(_REPOSITORY)},
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            assert child.stdout is not None
            while (line := await child.stdout.readline()) and line.strip() != b"started":
                pass  # its log lines
            assert line.strip() == b"started"
            await wait_until(
                lambda: _sessions_waiting_for_a_lock(database), timeout=20, message="the child's prepare to wait"
            )
            child.send_signal(signal.SIGKILL)
            await asyncio.wait_for(child.wait(), 10)
            # The server notices its client is gone while the query still waits, and ends it.
            await wait_until(
                lambda: _no_lock_waiters(database), timeout=20, message="the killed client's prepare to be cancelled"
            )
        finally:
            if child.returncode is None:
                child.kill()
                await child.wait()
        await holder.rollback()  # the lock goes: a prepare still running would now prepare
        assert await prepared_gids(database) == []
    finally:
        await holder.close()


async def _no_lock_waiters(dsn: str) -> bool:
    return await _sessions_waiting_for_a_lock(dsn) == 0
