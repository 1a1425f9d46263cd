"""The PostgreSQL decision log, shared by replicas: its schema, start-up errors, leases on
the database's clock, fencing, takeover, claims, group commit, and faults of the
database, on the real test server (a scratch database per test)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from adapters.postgres.testing import database_dsn
from coordinator.api._app import _open_log
from coordinator.config import Settings
from coordinator.log import DecisionLog, Fenced, LogUnavailable, NodeIdInUse, NodeRecord, PostgresLog, TransactionRecord
from coordinator.log import _pg_writer as pg_writer
from coordinator.log import _postgres as postgres_log
from coordinator.log._pg_schema import SCHEMA_VERSION
from tests.coordinator.log.conftest import Logs, record
from twopc_core import failpoints
from twopc_core.testing import ManualTimer, wait_until

# -- helpers ------------------------------------------------------------------------------


async def query(dsn: str, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one statement on its own connection (autocommit) and return its rows."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(statement, params or None)
        return await cur.fetchall() if cur.description is not None else []


async def terminate_log_connections(dsn: str) -> int:
    """Kill every backend the log holds in the database, as a server restart would."""
    rows = await query(
        dsn,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE datname = current_database() AND application_name = 'twopc-coordinator'",
    )
    return int(rows[0][0])


async def row_held_mid_exchange(dsn: str) -> bool:
    """Whether a session is inside an exchange, waiting for its client to send the rest."""
    rows = await query(
        dsn,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND state = 'active' AND wait_event = 'ClientRead'",
    )
    return int(rows[0][0]) > 0


async def lock_waiters(dsn: str) -> int:
    rows = await query(
        dsn, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    return int(rows[0][0])


@asynccontextmanager
async def database_away(server: str, dsn: str) -> AsyncIterator[None]:
    """The database refuses every connection, and its open ones are gone, until the
    block ends."""
    name = conninfo_to_dict(dsn)["dbname"]
    async with await psycopg.AsyncConnection.connect(server, autocommit=True) as admin:
        await admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(sql.Identifier(name)))
        try:
            await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            yield
        finally:
            await admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(sql.Identifier(name)))


async def dead(observer: DecisionLog, node_id: str) -> NodeRecord:
    """Wait until ``observer`` sees ``node_id``'s lease run out (by the database's clock)."""

    async def expired() -> NodeRecord | None:
        found = {n.node_id: n for n in await observer.nodes()}.get(node_id)
        return found if found is not None and not found.alive else None

    return await wait_until(expired, timeout=10, message=f"the lease of {node_id} to run out")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def hold_before_commit(monkeypatch: pytest.MonkeyPatch) -> tuple[asyncio.Event, asyncio.Event]:
    """Batches stop between their statements and their COMMIT (holding their node row
    locked) until the second event is set; the first is set when one got there."""
    reached, release = asyncio.Event(), asyncio.Event()
    real = failpoints.hit

    async def hit(name: str) -> None:
        if name == pg_writer.BEFORE_COMMIT:
            reached.set()
            await release.wait()
        await real(name)

    monkeypatch.setattr(failpoints, "hit", hit)
    return reached, release


# -- opening: the schema and what a person is told when it cannot ------------------------------


async def test_open_creates_the_tables_and_records_the_schema_version(pg_logs: Logs, pg_dsn: str) -> None:
    await pg_logs.open()
    assert await query(pg_dsn, "SELECT version FROM twopc_schema") == [(SCHEMA_VERSION,)]
    tables = await query(pg_dsn, "SELECT tablename FROM pg_tables WHERE tablename LIKE 'twopc_%' ORDER BY 1")
    assert tables == [("twopc_audit",), ("twopc_nodes",), ("twopc_schema",), ("twopc_transactions",)]


async def test_replicas_opening_at_once_create_the_schema_once(pg_dsn: str) -> None:
    logs = [PostgresLog(pg_dsn, pool_size=2) for _ in range(4)]
    try:
        await asyncio.gather(*(log.open() for log in logs))
        assert await query(pg_dsn, "SELECT version FROM twopc_schema") == [(SCHEMA_VERSION,)]
    finally:
        for log in logs:
            await log.close()


async def test_a_log_of_a_newer_schema_than_this_coordinator_knows_is_refused(pg_logs: Logs, pg_dsn: str) -> None:
    await pg_logs.close(await pg_logs.open())
    await query(pg_dsn, "UPDATE twopc_schema SET version = 99")
    with pytest.raises(LogUnavailable, match=r"schema version 99, newer"):
        await pg_logs.open()


async def test_open_says_so_when_the_server_cannot_be_reached() -> None:
    log = PostgresLog(f"postgresql://twopc@127.0.0.1:{free_port()}/twopc", timeout=2.0)
    with pytest.raises(LogUnavailable, match=r"cannot be reached .*Connection refused.*check the host and port"):
        await log.open()


async def test_open_says_so_when_the_database_does_not_exist(pg_server: str) -> None:
    log = PostgresLog(database_dsn(pg_server, "twopc_no_such_database"), timeout=2.0)
    with pytest.raises(LogUnavailable, match=r'database does not exist .*"twopc_no_such_database".*createdb'):
        await log.open()


async def test_open_says_so_when_the_dsn_is_not_one() -> None:
    with pytest.raises(LogUnavailable, match=r"log.dsn is not a valid PostgreSQL connection string"):
        await PostgresLog("this is not a dsn").open()


async def test_open_says_so_when_the_role_may_not_create_the_tables(pg_dsn: str) -> None:
    await query(pg_dsn, "CREATE SCHEMA locked")
    await query(pg_dsn, "REVOKE CREATE ON SCHEMA locked FROM CURRENT_USER")
    log = PostgresLog(make_conninfo(pg_dsn, options="-csearch_path=locked"), timeout=2.0)
    expected = r"may not create the decision log's tables in schema 'locked'.*GRANT CREATE"
    with pytest.raises(LogUnavailable, match=expected):
        await log.open()


async def test_open_says_so_when_the_role_may_not_write_the_tables(pg_logs: Logs, pg_dsn: str) -> None:
    await pg_logs.close(await pg_logs.open())
    await query(pg_dsn, "REVOKE INSERT, UPDATE ON twopc_transactions FROM CURRENT_USER")
    expected = r"lacks INSERT on twopc_transactions, UPDATE on twopc_transactions.*GRANT INSERT, UPDATE"
    with pytest.raises(LogUnavailable, match=expected):
        await pg_logs.open()


async def test_open_says_so_when_the_database_takes_no_writes(pg_dsn: str, pg_server: str) -> None:
    name = conninfo_to_dict(pg_dsn)["dbname"]
    await query(pg_server, f"ALTER DATABASE {name} SET default_transaction_read_only = on")
    with pytest.raises(LogUnavailable, match=r"takes no writes.*point log.dsn at the primary"):
        await PostgresLog(pg_dsn, timeout=2.0).open()


async def test_the_settings_of_a_postgres_store_open_a_postgres_log(pg_dsn: str) -> None:
    log = _open_log(Settings(log={"store": "postgres", "dsn": pg_dsn, "pool_size": 2}))
    assert isinstance(log, PostgresLog) and log.shared
    await log.open()
    await log.close()


async def test_writing_before_joining_is_refused(pg_dsn: str) -> None:
    log = PostgresLog(pg_dsn)
    await log.open()
    try:
        with pytest.raises(RuntimeError, match=r"join"):
            await log.force(record("g1"))
        with pytest.raises(RuntimeError, match=r"join"):
            log.save(record("g1"))
    finally:
        await log.close()


# -- records and their owner ------------------------------------------------------------------


async def test_every_record_read_names_the_replica_that_wrote_it(pg_logs: Logs) -> None:
    log = await pg_logs.open("c1")
    await log.force(record("g1", "committing", "committed"))
    got = await log.get("g1")
    assert got is not None and got.owner == "c1"
    assert [r.owner for r in await log.page(None, 10, None)] == ["c1"]


async def test_unfinished_lists_only_what_this_replica_owns(pg_logs: Logs) -> None:
    c1, c2 = await pg_logs.open("c1"), await pg_logs.open("c2")
    await c1.force(record("c1-a", "committing", "committed"))
    await c2.force(record("c2-a", "preparing"))
    await c1.force(record("c1-b", "committed", "committed", finished=True))
    assert [r.gtid for r in await c1.unfinished()] == ["c1-a"]
    assert [r.gtid for r in await c2.unfinished()] == ["c2-a"]


# -- group commit -------------------------------------------------------------------------------


async def test_a_lone_forced_write_commits_at_once_without_a_timer(pg_dsn: str) -> None:
    timer = ManualTimer()
    log = PostgresLog(pg_dsn, timer=timer)
    await log.open()
    try:
        await log.join("c1", "http://c1.test:7070", 30.0)
        await asyncio.wait_for(log.force(record("g1", "committing", "committed")), 5)
        assert (log.stats.commits, log.stats.durable_writes) == (1, 1)
        assert timer.pending == []
    finally:
        await log.close()


async def test_lazy_writes_are_committed_after_the_lazy_delay_or_with_a_forced_write(pg_dsn: str) -> None:
    timer = ManualTimer()
    log = PostgresLog(pg_dsn, timer=timer, lazy_delay=0.02)
    await log.open()
    try:
        await log.join("c1", "http://c1.test:7070", 30.0)
        log.save(record("lazy-1"))
        (call,) = await wait_until(lambda: timer.pending, message="the lazy commit to be set")
        assert call.delay == 0.02
        assert await log.get("lazy-1") is None
        timer.advance(0.02)
        await wait_until(lambda: log.get("lazy-1"), message="the lazy write committed")
        log.save(record("lazy-2"))
        await log.force(record("forced", "committing", "committed"))
        assert await log.get("lazy-2") is not None
        assert log.stats.commits == 2
    finally:
        await log.close()


async def test_decisions_per_log_commit_stay_above_ten_under_64_writers(pg_logs: Logs) -> None:
    log = await pg_logs.open()

    async def writer(n: int) -> None:
        for i in range(20):
            await log.force(record(f"w{n:02}-{i:02}", "committing", "committed"))

    await asyncio.gather(*(writer(n) for n in range(64)))
    assert log.stats.durable_writes == 64 * 20
    assert log.stats.decisions_per_commit > 10


# -- leases ---------------------------------------------------------------------------------------


async def test_join_registers_epoch_one_with_a_lease_by_the_database_clock(pg_logs: Logs, pg_dsn: str) -> None:
    log = await pg_logs.open("c1", lease=30.0)
    ((db_now,),) = await query(pg_dsn, "SELECT extract(epoch FROM clock_timestamp())::float8")
    (me,) = await log.nodes()
    assert (me.node_id, me.epoch, me.alive, me.taken_over_by) == ("c1", 1, True, None)
    assert db_now + 25 < me.lease_expires_at <= db_now + 30


async def test_renew_extends_the_lease(pg_logs: Logs) -> None:
    log = await pg_logs.open("c1")
    (before,) = await log.nodes()
    renewed = await log.renew()
    assert renewed.epoch == before.epoch
    assert renewed.lease_expires_at > before.lease_expires_at


async def test_leave_ends_the_lease_at_once_and_the_id_may_join_again_without_waiting(pg_logs: Logs) -> None:
    first = await pg_logs.open("c1", lease=30.0)
    await first.leave()
    (gone,) = await first.nodes()
    assert not gone.alive
    started = time.monotonic()
    second = await pg_logs.open("c1", lease=30.0)
    assert time.monotonic() - started < 5
    (me,) = await second.nodes()
    assert (me.epoch, me.alive) == (2, True)


async def test_a_second_join_of_a_live_id_raises_node_id_in_use_naming_the_holder(pg_logs: Logs) -> None:
    holder = await pg_logs.open("c1", lease=0.5)

    async def keep_renewing() -> None:
        while True:
            await holder.renew()
            await asyncio.sleep(0.1)  # the pace of a live replica's renewals

    renewing = asyncio.create_task(keep_renewing())
    try:
        with pytest.raises(NodeIdInUse, match=r"'c1' is in use: the replica at http://c1\.test:7070"):
            await asyncio.wait_for(pg_logs.open("c1", lease=0.5), 10)
    finally:
        renewing.cancel()


async def test_a_restarted_replica_waits_out_its_old_lease_and_joins_with_a_higher_epoch(pg_dsn: str) -> None:
    crashed = PostgresLog(pg_dsn)
    await crashed.open()
    old = await crashed.join("c1", "http://c1.test:7070", 1.0)
    await crashed.close()  # no leave: the lease stays until it runs out
    restarted = PostgresLog(pg_dsn)
    await restarted.open()
    try:
        me = await asyncio.wait_for(restarted.join("c1", "http://c1.test:7071", 1.0), 10)
        assert me.epoch == old.epoch + 1 and me.alive and me.advertise_url == "http://c1.test:7071"
    finally:
        await restarted.close()


async def test_renew_after_the_lease_ran_out_is_fenced(pg_logs: Logs) -> None:
    log = await pg_logs.open("c1", lease=0.3)
    observer = await pg_logs.open("c2")
    await dead(observer, "c1")
    with pytest.raises(Fenced):
        await log.renew()


# -- fencing and takeover ----------------------------------------------------------------------


async def _write_after_takeover(log: DecisionLog, how: str) -> None:
    if how == "force":
        await log.force(record("late", "committing", "committed"))
    elif how == "claim":
        await log.claim(record("late", idempotency_key="late-key"))
    else:
        log.save(record("late", "committing", "committed"))
        await log.sync()


@pytest.mark.parametrize("how", ["force", "claim", "lazy"])
async def test_writes_of_a_replica_taken_over_write_nothing_and_force_raises_fenced(pg_logs: Logs, how: str) -> None:
    old = await pg_logs.open("c1", lease=0.3)
    taker = await pg_logs.open("c2")
    await old.force(record("g1", "committing", "committed"))
    assert await taker.take_over(await dead(taker, "c1")) == 1
    if how == "lazy":
        await _write_after_takeover(old, how)  # dropped, and nobody waits for it to fail
    else:
        with pytest.raises(Fenced):
            await _write_after_takeover(old, how)
    with pytest.raises(Fenced):
        await old.force(record("later", "committing", "committed"))
    assert await taker.get("late") is None and await taker.get("later") is None
    assert [(r.gtid, r.owner) for r in await taker.unfinished()] == [("g1", "c2")]
    (c1,) = [n for n in await taker.nodes() if n.node_id == "c1"]
    assert (c1.epoch, c1.taken_over_by) == (2, "c2") and c1.taken_over_at is not None


async def test_the_broken_build_switch_lets_a_replica_taken_over_overwrite_its_takers_decision(
    pg_logs: Logs, pg_dsn: str
) -> None:
    # What the chaos scenario replica-zombie must catch: proof that the switch breaks fencing.
    broken = Logs(lambda: PostgresLog(pg_dsn, pool_size=3, timeout=2.0, unsafe_unfenced=True))
    try:
        old = await broken.open("c1", lease=0.3)
        taker = await pg_logs.open("c2")
        await old.force(record("g1", "preparing"))
        assert await taker.take_over(await dead(taker, "c1")) == 1
        await taker.force(record("g1", "aborting", "aborted"))
        await old.force(record("g1", "committing", "committed"))
        got = await taker.get("g1")
        assert got is not None and (got.decision, got.owner) == ("committed", "c1")
    finally:
        await broken.close_all()


async def test_a_write_after_the_lease_ran_out_is_fenced_though_nobody_took_over(pg_logs: Logs) -> None:
    log = await pg_logs.open("c1", lease=0.3)
    await dead(await pg_logs.open("c2"), "c1")
    with pytest.raises(Fenced):
        await log.force(record("g1", "committing", "committed"))
    assert await log.get("g1") is None


async def test_a_takeover_racing_the_old_owners_batch_sees_every_decision_that_made_it_in(
    pg_logs: Logs, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres_log, "STALLED_TRANSACTION_TIMEOUT", "60s")
    old = await pg_logs.open("c1", lease=0.5)
    taker = await pg_logs.open("c2")
    reached, release = hold_before_commit(monkeypatch)
    deciding = asyncio.create_task(old.force(record("g1", "committing", "committed")))
    await asyncio.wait_for(reached.wait(), 5)  # its fence passed under a live lease
    node = await dead(taker, "c1")
    taking = asyncio.create_task(taker.take_over(node))
    await wait_until(lambda: lock_waiters(pg_dsn), message="the takeover to wait for the batch's node row")
    assert not taking.done()
    release.set()
    await asyncio.wait_for(deciding, 5)  # durable: the decision made it in
    assert await asyncio.wait_for(taking, 5) == 1
    (moved,) = await taker.unfinished()
    assert (moved.gtid, moved.decision, moved.owner) == ("g1", "committed", "c2")
    with pytest.raises(Fenced):
        await old.force(record("g2", "committing", "committed"))


async def test_a_takeover_ends_the_session_of_a_replica_stalled_inside_its_batch_and_goes_through(
    pg_logs: Logs, monkeypatch: pytest.MonkeyPatch
) -> None:
    stalled = await pg_logs.open("c1", lease=0.3)
    taker = await pg_logs.open("c2")
    reached, release = hold_before_commit(monkeypatch)
    deciding = asyncio.create_task(stalled.force(record("g1", "committing", "committed")))
    await asyncio.wait_for(reached.wait(), 5)  # paused mid-batch, its node row locked
    assert await asyncio.wait_for(taker.take_over(await dead(taker, "c1")), 2.0) == 0
    release.set()
    with pytest.raises(Fenced):
        await asyncio.wait_for(deciding, 10)  # sent again on a new session, and fenced
    assert await taker.get("g1") is None


async def test_a_takeover_ends_a_session_stopped_between_the_statements_of_its_first_round_trip(
    pg_logs: Logs, pg_dsn: str
) -> None:
    await pg_logs.open("c1", lease=0.3)
    taker = await pg_logs.open("c2")
    c1 = await dead(taker, "c1")
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as frozen:
        # As a replica stopped after its fence went out and before the Sync: the server
        # waits for the rest of the exchange, which idle timeouts do not cover.
        with pytest.raises(psycopg.OperationalError):  # its session was ended
            async with frozen.pipeline():
                await frozen.execute("UPDATE twopc_nodes SET epoch = epoch WHERE node_id = 'c1'")
                await wait_until(lambda: row_held_mid_exchange(pg_dsn), message="the fence to hold the node row")
                assert await asyncio.wait_for(taker.take_over(c1), 2.0) == 0
    (row,) = [n for n in await taker.nodes() if n.node_id == "c1"]
    assert (row.epoch, row.taken_over_by) == (c1.epoch + 1, "c2")


async def test_a_takeover_that_cannot_end_a_stalled_session_gives_up_at_once_and_goes_through_later(
    pg_logs: Logs, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As on a server where the role may not end sessions: only the server's timeout helps.
    monkeypatch.setattr(postgres_log, "_STALLED_AFTER", 60.0)
    monkeypatch.setattr(postgres_log, "STALLED_TRANSACTION_TIMEOUT", "1500ms")
    stalled = await pg_logs.open("c1", lease=0.3)
    taker = await pg_logs.open("c2")
    reached, release = hold_before_commit(monkeypatch)
    deciding = asyncio.create_task(stalled.force(record("g1", "committing", "committed")))
    await asyncio.wait_for(reached.wait(), 5)  # paused mid-batch, its node row locked
    c1 = await dead(taker, "c1")
    # The taker does not sit on the lock (its own row, and so its renewals, would wait too).
    assert await asyncio.wait_for(taker.take_over(c1), 1.0) is None
    assert {n.node_id: (n.epoch, n.taken_over_by) for n in await taker.nodes()}["c1"] == (c1.epoch, None)

    # The server ends the stalled transaction, so a later round goes through.
    async def taken() -> list[int | None]:
        moved = await taker.take_over(c1)
        return [moved] if moved is not None else []

    assert await wait_until(taken, timeout=10, interval=0.1, message="the takeover to go through") == [0]
    release.set()
    with pytest.raises(Fenced):
        await asyncio.wait_for(deciding, 10)
    assert await taker.get("g1") is None


async def test_a_batch_that_waited_for_a_takeovers_epoch_bump_is_fenced(pg_logs: Logs, pg_dsn: str) -> None:
    log = await pg_logs.open("c1")
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as taker, taker.transaction():
        # A taker mid-way: it holds c1's row and has not yet committed its bump.
        await taker.execute("UPDATE twopc_nodes SET epoch = epoch + 1 WHERE node_id = 'c1'")
        deciding = asyncio.create_task(log.force(record("g1", "committing", "committed")))
        await wait_until(lambda: lock_waiters(pg_dsn), message="the batch to wait for the node row")
    with pytest.raises(Fenced):
        await asyncio.wait_for(deciding, 5)
    assert await log.get("g1") is None


async def test_of_two_replicas_taking_one_over_at_once_exactly_one_wins(pg_logs: Logs) -> None:
    old = await pg_logs.open("c1", lease=0.3)
    for n in range(5):
        old.save(record(f"g{n}", "preparing"))
    await old.sync()
    b, c = await pg_logs.open("c2"), await pg_logs.open("c3")
    node = await dead(b, "c1")
    moved = await asyncio.gather(b.take_over(node), c.take_over(node))
    assert sorted(moved, key=str) == [5, None]
    winner, loser = (b, c) if moved[0] == 5 else (c, b)
    assert len(await winner.unfinished()) == 5 and await loser.unfinished() == []
    (c1,) = [n for n in await b.nodes() if n.node_id == "c1"]
    assert c1.taken_over_by == ("c2" if winner is b else "c3")


async def test_a_live_replica_is_not_taken_over(pg_logs: Logs) -> None:
    live, other = await pg_logs.open("c1"), await pg_logs.open("c2")
    await live.force(record("g1", "committing", "committed"))
    (node,) = [n for n in await other.nodes() if n.node_id == "c1"]
    assert await other.take_over(node) is None
    await live.force(record("g2", "committing", "committed"))
    assert [r.gtid for r in await live.unfinished()] == ["g1", "g2"]


async def test_a_replica_taken_over_that_joins_again_starts_afresh(pg_logs: Logs, pg_dsn: str) -> None:
    old = await pg_logs.open("c1", lease=0.3)
    await old.force(record("g1", "committing", "committed"))
    taker = await pg_logs.open("c2")
    assert await taker.take_over(await dead(taker, "c1")) == 1
    me = await old.join("c1", "http://c1.test:7070", 30.0)
    assert (me.epoch, me.alive, me.taken_over_by) == (3, True, None)
    assert await old.unfinished() == []
    await old.force(record("g2", "committing", "committed"))
    assert [r.gtid for r in await old.unfinished()] == ["g2"]


# -- claims ---------------------------------------------------------------------------------------


async def test_a_claim_of_a_key_another_replica_holds_returns_its_record_and_writes_nothing(pg_logs: Logs) -> None:
    c1, c2 = await pg_logs.open("c1"), await pg_logs.open("c2")
    assert await c1.claim(record("c1-g", idempotency_key="k", request_hash="h")) is None
    holder = await c2.claim(record("c2-g", idempotency_key="k", request_hash="h"))
    assert holder is not None and (holder.gtid, holder.owner, holder.request_hash) == ("c1-g", "c1", "h")
    assert await c2.get("c2-g") is None
    assert (c1.stats.durable_writes, c2.stats.durable_writes) == (1, 0)


async def test_of_two_replicas_claiming_one_key_at_once_exactly_one_holds_it(pg_logs: Logs) -> None:
    c1, c2 = await pg_logs.open("c1"), await pg_logs.open("c2")
    answers = await asyncio.gather(
        c1.claim(record("c1-g", idempotency_key="k")), c2.claim(record("c2-g", idempotency_key="k"))
    )
    winners = [a for a in answers if a is None]
    holders = [a for a in answers if a is not None]
    assert len(winners) == 1 and len(holders) == 1
    assert holders[0].gtid in ("c1-g", "c2-g")
    assert [r.gtid for r in await c1.page(None, 10, None)] == [holders[0].gtid]


@pytest.mark.parametrize("others", [1, 12])  # batches small and large go differently
async def test_claims_of_one_key_in_one_batch_leave_it_to_exactly_one(pg_logs: Logs, others: int) -> None:
    log = await pg_logs.open()
    claims = [record("dup-a", idempotency_key="dup"), record("dup-b", idempotency_key="dup")]
    claims += [record(f"g{n:02}", idempotency_key=f"k{n}") for n in range(others)]
    answers = await asyncio.gather(*(log.claim(c) for c in claims))
    assert log.stats.commits == 1
    assert answers[2:] == [None] * others
    (holder,) = [a for a in answers[:2] if a is not None]
    assert holder.gtid in ("dup-a", "dup-b") and answers[:2].count(None) == 1
    assert len(await log.page(None, 100, None)) == 1 + others


async def test_a_claim_of_the_claimers_own_record_again_is_still_its_own(pg_logs: Logs) -> None:
    log = await pg_logs.open()
    claimed = record("g1", idempotency_key="k")
    assert await log.claim(claimed) is None
    assert await log.claim(claimed) is None


# -- faults of the database -------------------------------------------------------------------------


async def test_a_batch_whose_commit_went_unheard_is_sent_again_and_counted_once(
    pg_logs: Logs, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = await pg_logs.open()
    real = pg_writer._run_batch
    attempts: list[int] = []

    async def answer_lost(conn: psycopg.AsyncConnection[Any], fence: Any, writes: Any, *rest: Any) -> list[object]:
        results = await real(conn, fence, writes, *rest)
        attempts.append(len(writes))
        if len(attempts) == 1:  # committed, but the answer never came back
            await conn.close()
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return results

    monkeypatch.setattr(pg_writer, "_run_batch", answer_lost)
    claimed = record("g1", idempotency_key="k")
    decided = record("g2", "committing", "committed")
    assert await asyncio.gather(log.claim(claimed), log.force(decided)) == [None, None]
    assert attempts == [2, 2]
    assert log.stats.durable_writes == 2
    assert [r.gtid for r in await log.page(None, 10, None)] == ["g1", "g2"]


async def test_a_batch_whose_connection_dies_before_its_commit_is_sent_again(
    pg_logs: Logs, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres_log, "STALLED_TRANSACTION_TIMEOUT", "60s")
    log = await pg_logs.open()
    reached, release = hold_before_commit(monkeypatch)
    deciding = asyncio.create_task(log.force(record("g1", "committing", "committed")))
    await asyncio.wait_for(reached.wait(), 5)
    assert await terminate_log_connections(pg_dsn) >= 1
    release.set()
    await asyncio.wait_for(deciding, 10)
    got = await log.get("g1")
    assert got is not None and got.decision == "committed"


async def test_forced_writes_neither_fail_nor_get_lost_while_the_log_connections_are_killed(
    pg_logs: Logs, pg_dsn: str
) -> None:
    log = await pg_logs.open()
    kills_done = asyncio.Event()

    async def writer(n: int) -> int:
        # Writes until the kills are over, so a fast machine cannot finish before the first one.
        written = 0
        while not kills_done.is_set():
            await log.force(record(f"w{n:02}-{written:04}", "committing", "committed"))
            written += 1
        return written

    writers = asyncio.gather(*(writer(n) for n in range(16)))
    killed = 0
    for _ in range(4):
        commits = log.stats.commits

        def progressed(since: int = commits) -> bool:
            return log.stats.commits > since

        await wait_until(progressed, message="a commit since the last kill")
        killed += await terminate_log_connections(pg_dsn)
    kills_done.set()
    written = sum(await asyncio.wait_for(writers, 60))
    assert killed >= 4
    assert log.stats.durable_writes == written
    assert len(await log.page(None, 100_000, None)) == written


@pytest.fixture
async def impatient_logs(pg_dsn: str) -> AsyncIterator[Logs]:
    """PostgreSQL logs whose reads give up on a database that is away after half a second."""
    logs = Logs(lambda: PostgresLog(pg_dsn, pool_size=3, timeout=0.5))
    yield logs
    await logs.close_all()


async def test_while_the_database_is_away_forced_writes_wait_and_reads_raise_log_unavailable(
    impatient_logs: Logs, pg_dsn: str, pg_server: str
) -> None:
    log = await impatient_logs.open()
    await log.force(record("before", "committing", "committed"))
    async with database_away(pg_server, pg_dsn):
        deciding = asyncio.create_task(log.force(record("during", "committing", "committed")))
        for read in (lambda: log.get("before"), log.unfinished, log.nodes):
            with pytest.raises(LogUnavailable, match=r"does not answer"):
                await read()
        assert not deciding.done()
    await asyncio.wait_for(deciding, 30)

    async def read_again() -> TransactionRecord | None:
        try:
            return await log.get("during")
        except LogUnavailable:
            return None  # the pool may still be waiting to connect again

    got = await wait_until(read_again, message="reads to work again")
    assert got.decision == "committed"


async def test_leaving_while_the_database_is_away_keeps_the_lease_and_closing_writes_what_was_queued(
    pg_dsn: str, pg_server: str
) -> None:
    log = PostgresLog(pg_dsn, pool_size=3, timeout=0.5)
    await log.open()
    try:
        await log.join("c1", "http://c1.test:7070", 30.0)
        async with database_away(pg_server, pg_dsn):
            log.save(record("queued", "committed", "committed", finished=True))
            with pytest.raises(LogUnavailable, match=r"could not end the lease"):
                await log.leave()
    finally:
        await log.close()
    assert await query(pg_dsn, "SELECT gtid FROM twopc_transactions") == [("queued",)]
    ((alive,),) = await query(pg_dsn, "SELECT lease_expires_at > clock_timestamp() FROM twopc_nodes")
    assert alive


async def test_a_write_the_database_refuses_fails_alone_and_its_batch_mates_commit(pg_logs: Logs) -> None:
    log = await pg_logs.open()
    await log.force(record("holder", idempotency_key="k"))
    # The same key on another gtid breaks the key's uniqueness: that write can never commit.
    results = await asyncio.gather(
        log.force(record("ok-1", "committing", "committed")),
        log.force(record("thief", idempotency_key="k")),
        log.force(record("ok-2", "committing", "committed")),
        return_exceptions=True,
    )
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], LogUnavailable) and "refused the write of thief" in str(results[1])
    assert [r.gtid for r in await log.page(None, 10, None)] == ["holder", "ok-1", "ok-2"]


# -- retention ------------------------------------------------------------------------------------


async def test_replicas_pruning_at_once_remove_every_old_record_once(
    pg_logs: Logs, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres_log, "_PRUNE_CHUNK_ROWS", 7)
    c1, c2 = await pg_logs.open("c1"), await pg_logs.open("c2")
    for n in range(50):
        c1.save(record(f"old-{n:02}", "committed", "committed", finished=True, updated_at=10.0))
    await c1.force(record("pending", "committing", "committed", updated_at=10.0))
    pruned = await asyncio.gather(c1.prune(100.0), c2.prune(100.0))
    assert sum(pruned) == 50
    assert [r.gtid for r in await c1.page(None, 100, None)] == ["pending"]


# -- scale ------------------------------------------------------------------------------------------


async def test_a_takeover_of_10000_unfinished_transactions_and_reading_them_back_take_under_5_seconds(
    pg_logs: Logs,
) -> None:
    old = await pg_logs.open("c1")
    for n in range(10_000):
        old.save(record(f"g{n:05}", "committing", "committed", idempotency_key=f"k{n}"))
    await old.sync()
    await old.leave()
    taker = await pg_logs.open("c2")
    (node,) = [n for n in await taker.nodes() if n.node_id == "c1"]
    started = time.monotonic()
    moved = await taker.take_over(node)
    took_over = time.monotonic() - started
    records = await taker.unfinished()
    elapsed = time.monotonic() - started
    print(f"take_over of 10000: {took_over:.3f}s; with unfinished(): {elapsed:.3f}s")
    assert moved == 10_000 and len(records) == 10_000
    assert elapsed < 5.0
