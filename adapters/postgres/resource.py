"""PostgreSQL as a 2PC resource: branches as PostgreSQL's own prepared transactions.

Each branch is one local transaction: BEGIN, the application's SQL (early prepare,
:meth:`PostgresResource.branch`) or a handler's, which turns the enlisted payload into
SQL (work at prepare), then PREPARE TRANSACTION with the branch's gid makes it durable
in PostgreSQL itself. Phase 2 runs on another connection with COMMIT PREPARED /
ROLLBACK PREPARED by gid, as recovery would.

Every branch also writes its gid into ``twopc_committed_branches`` just before it
prepares, so the row exists exactly when the branch committed. That tells a commit
repeated after a crash ("already committed") from a branch that was rolled back behind
our back, and a gid prepared a second time is refused by the primary key.

The branch's own statements are plain SQL on an autocommit connection rather than
psycopg's ``tpc_begin``/``tpc_prepare``, so that the mark and PREPARE TRANSACTION go to
the server as one query: a round trip is the largest cost of a branch on the client.

The branch's state is PostgreSQL's: prepared while ``pg_prepared_xacts`` lists its gid,
committed once the mark is visible, both written by the branch's own transaction, so a
vote costs one durable write (PREPARE TRANSACTION) and the participant log only caches
it (``holds_branch_state``).

Two pools: branch connections run one branch at a time, control connections (also
autocommit) run phase 2, recovery and the application's reads.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from typing import Any, Literal

import psycopg
import structlog
from opentelemetry import trace
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.pq import Escaping
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from adapters.postgres.errors import BranchAlreadyCommitted, BranchLost, BranchTransactionEnded, PostgresSetupError
from adapters.postgres.gids import GidScheme
from adapters.postgres.prepared import (
    PreparedBranch,
    PreparedStats,
    check_prepared_capacity,
    list_prepared,
    prepared_stats,
)
from participant_sdk import BranchStatus, PrepareResult, Resource, Vote

__all__ = ["MARKS_TABLE", "PostgresResource", "PrepareHandler", "PrepareStatement"]

logger = structlog.get_logger("adapters.postgres")
tracer = trace.get_tracer("adapters.postgres")

#: Work at prepare: ``handler(conn, gtid, branch, payload)`` runs the branch's SQL on
#: ``conn`` (inside the branch's transaction, which it must not end) and votes;
#: ``None`` means YES.
PrepareHandler = Callable[[psycopg.AsyncConnection, str, str, Any], Awaitable[PrepareResult | None]]

#: Work at prepare as one SQL statement: ``statement(gtid, branch, payload)`` returns the
#: statement and its parameters (``%s`` placeholders, bound client-side by psycopg), or
#: the vote (NO or READ_ONLY) for a payload that needs no database. The resource sends
#: BEGIN, the statement, the mark and PREPARE TRANSACTION as one query: one round trip
#: where a handler takes one per statement and one more each to begin and prepare. An
#: error the statement raises (a constraint, a plpgsql RAISE) is a NO vote with the
#: server's message as its reason.
PrepareStatement = Callable[[str, str, Any], "tuple[str, Sequence[Any]] | PrepareResult"]

MARKS_TABLE = "twopc_committed_branches"
_CREATE_MARKS = f"""
CREATE TABLE IF NOT EXISTS {MARKS_TABLE} (
    gid        text PRIMARY KEY,
    written_at timestamptz NOT NULL DEFAULT now()
)
"""
#: The mark and the branch's end, in one simple-protocol query (no parameters, so
#: several statements may go together; the gid goes in as a literal quoted by libpq);
#: a mark already there aborts the transaction.
_MARK_AND_PREPARE = f"INSERT INTO {MARKS_TABLE} (gid) VALUES (%b); PREPARE TRANSACTION %b".encode()
_MARK_AND_COMMIT = f"INSERT INTO {MARKS_TABLE} (gid) VALUES (%b); COMMIT".encode()
_IS_MARKED = f"SELECT 1 FROM {MARKS_TABLE} WHERE gid = %s"
_STATUS_OF_GID = (
    "SELECT EXISTS (SELECT 1 FROM pg_prepared_xacts WHERE gid = %s AND database = current_database()), "
    f"EXISTS (SELECT 1 FROM {MARKS_TABLE} WHERE gid = %s)"
)
_PRUNE_MARKS = f"DELETE FROM {MARKS_TABLE} WHERE written_at < now() - make_interval(secs => %s)"
#: How often a branch's session checks, while a query runs, that its client is still there.
_CLIENT_CHECK = "250ms"
#: Any constant serialises concurrent creators of the marks table (IF NOT EXISTS alone races).
_SCHEMA_LOCK = 0x7470_6300

#: The protocol's statements as their spans show them: the gid is a value, left out.
_PREPARE_TEXT = f"INSERT INTO {MARKS_TABLE} (gid) VALUES ($1); PREPARE TRANSACTION $1"
_ONE_PHASE_TEXT = f"INSERT INTO {MARKS_TABLE} (gid) VALUES ($1); COMMIT"


class _Dropped(Exception):
    """The handler voted no or read-only: roll the branch back and answer its vote."""

    def __init__(self, result: PrepareResult) -> None:
        super().__init__(result.reason or result.vote.value)
        self.result = result


class PostgresResource(Resource):
    """Branches of one participant in one PostgreSQL database.

    ``handler``: the work at prepare (without one, only early prepare is possible), or
    ``statement``: the same as one SQL statement, prepared in one round trip.
    ``gid_prefix``: defaults to ``twopc:{participant}:``. ``pool_size``: branch
    connections, hence branches in their first phase at once; the server must allow at
    least that many prepared transactions. ``lock_timeout_ms``: a branch waiting longer
    for a row lock gives up and votes no, so two transactions locking rows in two
    databases in opposite orders cannot wait for each other forever. ``mark_retention``:
    how long the committed-branch marks are kept (seconds).
    """

    holds_branch_state = True

    def __init__(
        self,
        dsn: str,
        participant: str,
        *,
        handler: PrepareHandler | None = None,
        statement: PrepareStatement | None = None,
        gid_prefix: str | None = None,
        pool_size: int = 10,
        control_pool_size: int = 4,
        lock_timeout_ms: int = 5000,
        connect_timeout: float = 30.0,
        mark_retention: float = 7 * 86400.0,
    ) -> None:
        if pool_size < 1 or control_pool_size < 1:
            raise ValueError("pool sizes must be at least 1")
        if handler is not None and statement is not None:
            raise ValueError("give the work at prepare as a handler or as a statement, not both")
        self.dsn = dsn
        self.participant = participant
        self.handler = handler
        self.statement = statement
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
            kwargs={"autocommit": True},
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
        # Session-wide, so it costs nothing per branch.
        await conn.execute("SELECT set_config('lock_timeout', %s, false)", [f"{self.lock_timeout_ms}ms"])
        if conn.info.server_version >= 140000:
            # A prepare sent as one query runs on after its client died (killed while it
            # waited for a lock, say), and would prepare a branch nobody voted for; the
            # server checks for its client while the query runs, and cancels it instead.
            await conn.execute("SELECT set_config('client_connection_check_interval', %s, false)", [_CLIENT_CHECK])

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
        """Begin the branch, yield its connection, then mark and prepare it (or commit
        it in one phase); roll back if the body raises."""
        gid = self.gids.gid(gtid, branch)
        conn = await self._branches.getconn()
        try:
            literal = _quoted(conn, gid)
            end = (_MARK_AND_PREPARE % (literal, literal)) if finish == "prepare" else _MARK_AND_COMMIT % literal
            with self._statement(conn, gtid, branch, "BEGIN", "BEGIN"):
                await conn.execute("BEGIN")
            try:
                with self._statements_traced(conn, gtid, branch):
                    yield conn
                if conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
                    raise BranchTransactionEnded(
                        f"branch {branch} of {gtid}: the branch's own SQL committed or rolled back its "
                        "transaction; ending it belongs to the protocol"
                    )
                if finish == "prepare":
                    with self._statement(conn, gtid, branch, "PREPARE TRANSACTION", _PREPARE_TEXT):
                        await conn.execute(end)  # if PREPARE fails, PostgreSQL has rolled back
                else:
                    with self._statement(conn, gtid, branch, "COMMIT", _ONE_PHASE_TEXT):
                        await conn.execute(end)
            except BaseException as exc:
                # Not prepared: a plain ROLLBACK; a broken connection is discarded by
                # the pool and the server drops its transaction.
                if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    with suppress(psycopg.Error), self._statement(conn, gtid, branch, "ROLLBACK", "ROLLBACK"):
                        await conn.execute("ROLLBACK")
                # The mark comes last, so the work of a gid committed before runs into
                # it first, or into the rows it wrote then: name the real cause.
                if isinstance(exc, psycopg.Error) and await _is_marked_quietly(conn, gid):
                    message = f"branch {branch} of {gtid} was already committed here ({gid})"
                    raise BranchAlreadyCommitted(message) from None
                raise
        finally:
            await self._branches.putconn(conn)

    @asynccontextmanager
    async def branch(self, gtid: str, branch: str) -> AsyncIterator[psycopg.AsyncConnection]:
        """Early prepare: the application's SQL runs on the yielded connection; a clean
        exit prepares the branch (see :meth:`Participant.branch`)."""
        async with self._local_transaction(gtid, branch, "prepare") as conn:
            yield conn

    # -- spans ---------------------------------------------------------------------------

    @contextmanager
    def _statement(
        self, conn: psycopg.AsyncConnection, gtid: str, branch: str, operation: str, text: str
    ) -> Iterator[None]:
        """A CLIENT span for one of the protocol's statements, under the participant's
        span; none outside a trace (recovery, the hot path with tracing off)."""
        if not trace.get_current_span().is_recording():
            yield
            return
        attributes = _db_attributes(conn, operation, text)
        attributes.update({"twopc.gtid": gtid, "twopc.participant": self.participant, "twopc.branch": branch})
        with tracer.start_as_current_span(operation, kind=trace.SpanKind.CLIENT, attributes=attributes):
            yield

    @contextmanager
    def _statements_traced(self, conn: psycopg.AsyncConnection, gtid: str, branch: str) -> Iterator[None]:
        """While the branch's own SQL runs (a handler's, or the application's in early
        prepare), each statement it executes gets a span, when the branch is traced."""
        if not trace.get_current_span().is_recording():
            yield
            return
        conn.cursor_factory = _TracedCursor
        try:
            yield
        finally:
            conn.cursor_factory = psycopg.AsyncCursor

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
        if self.statement is not None:
            return await self._prepare_statement(gtid, branch, payload, self.statement)
        try:
            async with self._local_transaction(gtid, branch, "prepare") as conn:
                await self._run_handler(conn, gtid, branch, payload)
        except _Dropped as dropped:
            return dropped.result
        except BranchAlreadyCommitted as exc:
            return PrepareResult.no(str(exc))
        return PrepareResult.yes()

    async def _prepare_statement(
        self, gtid: str, branch: str, payload: Any, statement: PrepareStatement
    ) -> PrepareResult:
        """BEGIN, the statement, the mark and PREPARE TRANSACTION in one query."""
        work = statement(gtid, branch, payload)
        if isinstance(work, PrepareResult):
            if work.vote is Vote.YES:
                raise TypeError("a prepare statement votes YES by giving its SQL, not PrepareResult.yes()")
            return work
        query, params = work
        gid = self.gids.gid(gtid, branch)
        conn = await self._branches.getconn()
        try:
            bound = psycopg.AsyncClientCursor(conn).mogrify(query, params).encode()
            literal = _quoted(conn, gid)
            text = b"BEGIN; " + bound + b"; " + _MARK_AND_PREPARE % (literal, literal)
            try:
                with self._statement(conn, gtid, branch, "PREPARE TRANSACTION", f"BEGIN; {query}; {_PREPARE_TEXT}"):
                    await conn.execute(text)
            except psycopg.Error as exc:
                if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    with suppress(psycopg.Error):
                        await conn.execute("ROLLBACK")
                if isinstance(exc, psycopg.OperationalError):
                    raise  # the database, not the work: the SDK votes no with it
                if await _is_marked_quietly(conn, gid):
                    return PrepareResult.no(f"branch {branch} of {gtid} was already committed here ({gid})")
                return PrepareResult.no(_server_message(exc))
        finally:
            await self._branches.putconn(conn)
        return PrepareResult.yes()

    async def commit(self, gtid: str, branch: str) -> None:
        gid = self.gids.gid(gtid, branch)
        async with self._control.connection() as conn:
            try:
                with self._statement(conn, gtid, branch, "COMMIT PREPARED", "COMMIT PREPARED $1"):
                    await conn.execute(_finish_prepared(conn, b"COMMIT", gid))
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
                with self._statement(conn, gtid, branch, "ROLLBACK PREPARED", "ROLLBACK PREPARED $1"):
                    await conn.execute(_finish_prepared(conn, b"ROLLBACK", gid))
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

    async def branch_status(self, gtid: str, branch: str) -> BranchStatus:
        gid = self.gids.gid(gtid, branch)
        async with self._control.connection() as conn:
            cursor = await conn.execute(_STATUS_OF_GID, [gid, gid])
            row = await cursor.fetchone()
        prepared, marked = row if row is not None else (False, False)
        if prepared:
            return BranchStatus.PREPARED
        # A mark is visible only once its transaction committed.
        return BranchStatus.COMMITTED if marked else BranchStatus.UNKNOWN

    # -- health ------------------------------------------------------------------------

    async def prepared(self) -> list[PreparedBranch]:
        """This participant's prepared transactions in its database, oldest first."""
        async with self._control.connection() as conn:
            return await list_prepared(conn, self.gids)

    def metric_families(self) -> Iterator[Metric]:
        """The connection pools' figures, for the service's ``/metrics``."""
        connections = GaugeMetricFamily(
            "twopc_pg_pool_connections", "Connections each pool holds to the database.", labels=["pool"]
        )
        waiting = GaugeMetricFamily(
            "twopc_pg_pool_requests_waiting", "Requests waiting for a connection of each pool.", labels=["pool"]
        )
        for name, pool in (("branches", self._branches), ("control", self._control)):
            stats = pool.get_stats()
            connections.add_metric([name], stats.get("pool_size", 0))
            waiting.add_metric([name], stats.get("requests_waiting", 0))
        yield connections
        yield waiting

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


class _TracedCursor(psycopg.AsyncCursor[Any]):
    """A cursor whose statements are CLIENT spans; the text as the application wrote it,
    its parameters (the values) left out."""

    async def execute(self, query: Any, params: Any = None, **kwargs: Any) -> _TracedCursor:
        text = _query_text(query, self.connection)
        operation = text.split(None, 1)[0].upper() if text.strip() else "SQL"
        with tracer.start_as_current_span(
            operation, kind=trace.SpanKind.CLIENT, attributes=_db_attributes(self.connection, operation, text)
        ):
            await super().execute(query, params, **kwargs)
        return self


def _query_text(query: Any, conn: psycopg.AsyncConnection) -> str:
    if isinstance(query, bytes):
        return query.decode(errors="replace")
    if isinstance(query, sql.Composable):
        return query.as_string(conn)
    return str(query)


def _db_attributes(conn: psycopg.AsyncConnection, operation: str, text: str) -> dict[str, Any]:
    """The database attributes of OpenTelemetry's semantic conventions."""
    return {
        "db.system": "postgresql",
        "db.system.name": "postgresql",
        "db.namespace": conn.info.dbname,
        "db.operation": operation,
        "db.operation.name": operation,
        "db.query.text": text,
        "server.address": conn.info.host,
        "server.port": conn.info.port,
    }


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


async def _is_marked(conn: psycopg.AsyncConnection, gid: str) -> bool:
    cursor = await conn.execute(_IS_MARKED, [gid])
    return await cursor.fetchone() is not None


def _quoted(conn: psycopg.AsyncConnection, gid: str) -> bytes:
    """``gid`` as an SQL literal, quoted by libpq for this connection: psycopg's
    ``sql.Literal`` (which its two-phase methods use too) costs several times as much."""
    return Escaping(conn.pgconn).escape_literal(gid.encode())


def _finish_prepared(conn: psycopg.AsyncConnection, action: bytes, gid: str) -> bytes:
    return action + b" PREPARED " + _quoted(conn, gid)


async def _is_marked_quietly(conn: psycopg.AsyncConnection, gid: str) -> bool:
    """Whether ``gid`` is marked committed, on the error path: False if that cannot be told."""
    try:
        return await _is_marked(conn, gid)
    except psycopg.Error:
        return False


def _server_message(exc: psycopg.Error) -> str:
    """The server's own words for an error (a RAISE's message, a constraint's)."""
    message = exc.diag.message_primary if isinstance(exc, psycopg.DatabaseError) else None
    return message or str(exc) or type(exc).__name__


def _redacted(dsn: str) -> str:
    """The DSN without a password, for messages."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparsable DSN>"
    params.pop("password", None)
    return psycopg.conninfo.make_conninfo("", **params)
