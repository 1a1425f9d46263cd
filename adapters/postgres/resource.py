"""PostgreSQL as a 2PC resource, on psycopg 3's two-phase API.

Each branch is one local transaction begun with ``tpc_begin(gid)``: the application's
SQL runs in it (early prepare, :meth:`PostgresResource.branch`) or a handler turns the
enlisted payload into SQL (work at prepare), then ``tpc_prepare()`` makes it durable in
PostgreSQL itself (PREPARE TRANSACTION). Phase 2 runs on another connection with
``tpc_commit(gid)`` / ``tpc_rollback(gid)``, as recovery would.

Every branch also writes its gid into ``twopc_committed_branches`` before it prepares,
so the row exists exactly when the branch committed. That tells a commit repeated after
a crash ("already committed") from a branch that was rolled back behind our back, and a
gid prepared a second time is refused by the primary key.

Two pools: branch connections only ever run ``tpc_begin`` … ``tpc_prepare`` (psycopg
keeps a prepared connection's two-phase state until its next ``tpc_begin``), and
autocommit control connections run phase 2, recovery and the application's reads.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any, Literal

import psycopg
import structlog
from psycopg import errors as pg_errors
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from adapters.postgres.errors import BranchAlreadyCommitted, BranchLost, PostgresSetupError
from adapters.postgres.gids import GidScheme
from adapters.postgres.prepared import (
    PreparedBranch,
    PreparedStats,
    check_prepared_capacity,
    list_prepared,
    prepared_stats,
)
from participant_sdk import PrepareResult, Resource, Vote

__all__ = ["MARKS_TABLE", "PostgresResource", "PrepareHandler"]

logger = structlog.get_logger("adapters.postgres")

#: Work at prepare: ``handler(conn, gtid, branch, payload)`` runs the branch's SQL on
#: ``conn`` (inside the branch's transaction) and votes; ``None`` means YES.
PrepareHandler = Callable[[psycopg.AsyncConnection, str, str, Any], Awaitable[PrepareResult | None]]

MARKS_TABLE = "twopc_committed_branches"
_CREATE_MARKS = f"""
CREATE TABLE IF NOT EXISTS {MARKS_TABLE} (
    gid        text PRIMARY KEY,
    written_at timestamptz NOT NULL DEFAULT now()
)
"""
_MARK = f"INSERT INTO {MARKS_TABLE} (gid) VALUES (%s) ON CONFLICT (gid) DO NOTHING RETURNING gid"
_IS_MARKED = f"SELECT 1 FROM {MARKS_TABLE} WHERE gid = %s"
_PRUNE_MARKS = f"DELETE FROM {MARKS_TABLE} WHERE written_at < now() - make_interval(secs => %s)"
#: Any constant serialises concurrent creators of the marks table (IF NOT EXISTS alone races).
_SCHEMA_LOCK = 0x7470_6300


class _Dropped(Exception):
    """The handler voted no or read-only: roll the branch back and answer its vote."""

    def __init__(self, result: PrepareResult) -> None:
        super().__init__(result.reason or result.vote.value)
        self.result = result


class PostgresResource(Resource):
    """Branches of one participant in one PostgreSQL database.

    ``handler``: the work at prepare (without one, only early prepare is possible).
    ``gid_prefix``: defaults to ``twopc:{participant}:``. ``pool_size``: branch
    connections, hence branches in their first phase at once; the server must allow at
    least that many prepared transactions. ``lock_timeout_ms``: a branch waiting longer
    for a row lock gives up and votes no, so two transactions locking rows in two
    databases in opposite orders cannot wait for each other forever. ``mark_retention``:
    how long the committed-branch marks are kept (seconds).
    """

    def __init__(
        self,
        dsn: str,
        participant: str,
        *,
        handler: PrepareHandler | None = None,
        gid_prefix: str | None = None,
        pool_size: int = 10,
        control_pool_size: int = 4,
        lock_timeout_ms: int = 5000,
        connect_timeout: float = 30.0,
        mark_retention: float = 7 * 86400.0,
    ) -> None:
        if pool_size < 1 or control_pool_size < 1:
            raise ValueError("pool sizes must be at least 1")
        self.dsn = dsn
        self.participant = participant
        self.handler = handler
        self.gids = GidScheme(gid_prefix) if gid_prefix else GidScheme.for_participant(participant)
        self.pool_size = pool_size
        self.lock_timeout_ms = lock_timeout_ms
        self.connect_timeout = connect_timeout
        self.mark_retention = mark_retention
        self._branches = AsyncConnectionPool(
            dsn,
            min_size=1,
            max_size=pool_size,
            open=False,
            configure=self._configure_branch_connection,
            name=f"{participant}-branches",
        )
        self._control = AsyncConnectionPool(
            dsn,
            min_size=1,
            max_size=control_pool_size,
            open=False,
            kwargs={"autocommit": True},
            name=f"{participant}-control",
        )
        self._last_mark_prune = 0.0
        self.max_prepared_transactions = 0

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        # One plain connection first: a wrong DSN fails at once with the server's reason,
        # where the pools would retry until their timeout.
        try:
            probe = await psycopg.AsyncConnection.connect(self.dsn, connect_timeout=max(1, int(self.connect_timeout)))
        except psycopg.OperationalError as exc:
            raise PostgresSetupError(f"cannot connect to PostgreSQL ({_redacted(self.dsn)}): {exc}") from exc
        await probe.close()
        try:
            await self._control.open(wait=True, timeout=self.connect_timeout)
            await self._branches.open(wait=True, timeout=self.connect_timeout)
        except PoolTimeout as exc:
            await self.close()
            raise PostgresSetupError(
                f"cannot connect to PostgreSQL ({_redacted(self.dsn)}) within {self.connect_timeout:.0f}s: {exc}"
            ) from exc
        try:
            async with self._control.connection() as conn:
                self.max_prepared_transactions = await check_prepared_capacity(conn, self.pool_size)
                await _create_marks_table(conn)
        except BaseException:
            await self.close()
            raise
        logger.info(
            "postgres resource started",
            participant=self.participant,
            gid_prefix=self.gids.prefix,
            max_prepared_transactions=self.max_prepared_transactions,
        )

    async def close(self) -> None:
        await self._branches.close()
        await self._control.close()

    async def _configure_branch_connection(self, conn: psycopg.AsyncConnection) -> None:
        # Session-wide, so it costs nothing per branch; set outside any transaction.
        await conn.set_autocommit(True)
        await conn.execute("SELECT set_config('lock_timeout', %s, false)", [f"{self.lock_timeout_ms}ms"])
        await conn.set_autocommit(False)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        """An autocommit connection to the participant's database, for the application's
        own queries outside any global transaction."""
        async with self._control.connection() as conn:
            yield conn

    # -- the branch's local transaction ------------------------------------------------

    @asynccontextmanager
    async def _local_transaction(
        self, gtid: str, branch: str, finish: Literal["prepare", "commit"]
    ) -> AsyncIterator[psycopg.AsyncConnection]:
        """Begin and mark the branch, yield its connection, then prepare it (or commit
        it in one phase); roll back if the body raises."""
        gid = self.gids.gid(gtid, branch)
        conn = await self._branches.getconn()
        try:
            await conn.tpc_begin(gid)
            try:
                # First, so that a gid already committed is refused before any work.
                await _mark(conn, gid, branch, gtid)
                yield conn
            except BaseException:
                # Not prepared yet, so this is a plain ROLLBACK; a broken connection is
                # discarded by the pool and the server drops its transaction.
                with suppress(psycopg.Error):
                    await conn.tpc_rollback()
                raise
            if finish == "prepare":
                await conn.tpc_prepare()  # if PREPARE fails, PostgreSQL has rolled back
            else:
                await conn.tpc_commit()  # not prepared: a plain COMMIT
        finally:
            await self._branches.putconn(conn)

    @asynccontextmanager
    async def branch(self, gtid: str, branch: str) -> AsyncIterator[psycopg.AsyncConnection]:
        """Early prepare: the application's SQL runs on the yielded connection; a clean
        exit prepares the branch (see :meth:`Participant.branch`)."""
        async with self._local_transaction(gtid, branch, "prepare") as conn:
            yield conn

    async def _run_handler(self, conn: psycopg.AsyncConnection, gtid: str, branch: str, payload: Any) -> None:
        if self.handler is None:
            raise _Dropped(
                PrepareResult.no(f"participant {self.participant} takes no work at prepare; use early prepare")
            )
        result = await self.handler(conn, gtid, branch, payload)
        if result is not None and result.vote is not Vote.YES:
            raise _Dropped(result)

    # -- the Resource interface ----------------------------------------------------------

    async def prepare(self, gtid: str, branch: str, payload: Any) -> PrepareResult:
        try:
            async with self._local_transaction(gtid, branch, "prepare") as conn:
                await self._run_handler(conn, gtid, branch, payload)
        except _Dropped as dropped:
            return dropped.result
        except BranchAlreadyCommitted as exc:
            return PrepareResult.no(str(exc))
        return PrepareResult.yes()

    async def commit(self, gtid: str, branch: str) -> None:
        gid = self.gids.gid(gtid, branch)
        async with self._control.connection() as conn:
            try:
                await conn.tpc_commit(gid)
            except pg_errors.UndefinedObject:
                if not await _is_marked(conn, gid):
                    raise BranchLost(
                        f"branch {branch} of {gtid} ({gid}) is neither prepared nor committed in "
                        f"{conn.info.dbname}: it was rolled back outside the protocol"
                    ) from None
                # Committed before (a repeated commit, or one lost in a crash before it was logged).

    async def abort(self, gtid: str, branch: str) -> None:
        gid = self.gids.gid(gtid, branch)
        async with self._control.connection() as conn:
            try:
                await conn.tpc_rollback(gid)
            except pg_errors.UndefinedObject:
                if await _is_marked(conn, gid):
                    raise BranchLost(
                        f"branch {branch} of {gtid} ({gid}) cannot be aborted: it is already committed "
                        f"in {conn.info.dbname}"
                    ) from None
                # Never prepared, or rolled back before: nothing to drop.

    async def recover(self) -> list[tuple[str, str]]:
        async with self._control.connection() as conn:
            found = await list_prepared(conn, self.gids)
            await self._prune_marks(conn)
        return [(b.gtid, b.branch) for b in found]

    # -- health ------------------------------------------------------------------------

    async def prepared(self) -> list[PreparedBranch]:
        """This participant's prepared transactions in its database, oldest first."""
        async with self._control.connection() as conn:
            return await list_prepared(conn, self.gids)

    async def prepared_stats(self) -> PreparedStats:
        async with self._control.connection() as conn:
            return await prepared_stats(conn, self.gids)

    async def _prune_marks(self, conn: psycopg.AsyncConnection) -> None:
        # Recovery runs every minute or so; the marks need pruning far less often.
        now = time.monotonic()
        if now - self._last_mark_prune < min(3600.0, self.mark_retention / 10):
            return
        self._last_mark_prune = now
        cursor = await conn.execute(_PRUNE_MARKS, [self.mark_retention])
        if cursor.rowcount:
            logger.debug("old committed-branch marks pruned", count=cursor.rowcount)


async def _create_marks_table(conn: psycopg.AsyncConnection) -> None:
    cursor = await conn.execute("SELECT to_regclass(%s)", [MARKS_TABLE])
    row = await cursor.fetchone()
    if row is not None and row[0] is not None:
        return
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", [_SCHEMA_LOCK])
            await conn.execute(_CREATE_MARKS)
    except psycopg.errors.InsufficientPrivilege as exc:
        raise PostgresSetupError(
            f"cannot create the table {MARKS_TABLE} in {conn.info.dbname}: {exc}; grant CREATE on the "
            f"schema to this role, or create it once as its owner: {' '.join(_CREATE_MARKS.split())}"
        ) from exc


async def _mark(conn: psycopg.AsyncConnection, gid: str, branch: str, gtid: str) -> None:
    cursor = await conn.execute(_MARK, [gid])
    if await cursor.fetchone() is None:
        raise BranchAlreadyCommitted(f"branch {branch} of {gtid} was already committed here ({gid})")


async def _is_marked(conn: psycopg.AsyncConnection, gid: str) -> bool:
    cursor = await conn.execute(_IS_MARKED, [gid])
    return await cursor.fetchone() is not None


def _redacted(dsn: str) -> str:
    """The DSN without a password, for messages."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparsable DSN>"
    params.pop("password", None)
    return psycopg.conninfo.make_conninfo(**params)  # type: ignore[arg-type]
