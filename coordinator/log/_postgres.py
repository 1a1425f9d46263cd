"""The decision log on PostgreSQL: one database that every coordinator replica shares.

Writes are group-committed by :class:`PostgresWriter`, each batch one transaction fenced
on the writer's lease; reads and the replica calls (join, renew, leave, nodes, take over)
use a small pool of their own. Leases are kept in ``twopc_nodes`` and expire by the
database's clock (``clock_timestamp()``), never a replica's. Nothing here needs more
than plain tables, row locks and conditional writes (no advisory locks, no
LISTEN/NOTIFY), and serialization failures and deadlocks are retried, so that a
PostgreSQL-compatible distributed store can hold the log too.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any, TypeVar

import orjson
import psycopg
import structlog
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from coordinator.log._base import DecisionLog, Fenced, LogStats, LogUnavailable, NodeIdInUse
from coordinator.log._pg_faults import connect_failure, is_transient, reason
from coordinator.log._pg_rows import COLUMNS, FENCE, from_row
from coordinator.log._pg_schema import AUDIT, NODES, TRANSACTIONS, prepare_schema
from coordinator.log._pg_writer import Fence, PostgresWriter
from coordinator.records import AuditEntry, IdempotencyEntry, NodeRecord, TransactionRecord
from twopc_core.groupcommit import CommitObserver, Timer

__all__ = ["PostgresLog"]

log = structlog.get_logger(__name__)

T = TypeVar("T")

#: A transaction left open by a replica that stalls (paused, cut off) holds its node row
#: locked, and a replica taking it over would wait on that lock; the server ends such a
#: session after this long. A healthy batch is idle in its transaction for microseconds.
STALLED_TRANSACTION_TIMEOUT = "2s"
#: How long a takeover waits for such a stalled transaction's lock before trying again
#: in the next round (a healthy batch holds its node row for milliseconds).
_TAKEOVER_LOCK_WAIT = "200ms"
#: After this long on the lock, the taker ends the sessions that hold it while they wait
#: for their client: a replica whose lease ran out, stalled inside a batch. One stopped
#: between the statements of its first round trip is not idle in its transaction (the
#: server waits for the rest of the exchange), so the server alone would never end it.
_STALLED_AFTER = 0.05

#: The sessions that block ``pid`` while they wait for their client, ended.
_END_STALLED_HOLDERS = """
SELECT count(pg_terminate_backend(a.pid)) FROM pg_stat_activity a
WHERE a.pid = ANY(pg_blocking_pids(%s)) AND a.wait_event = 'ClientRead'
"""

#: Pruning goes in chunks, each its own short transaction; rows another replica is
#: pruning at the same moment are skipped, not waited for.
_PRUNE_CHUNK = (
    f"DELETE FROM {TRANSACTIONS} WHERE gtid IN (SELECT gtid FROM {TRANSACTIONS}"
    " WHERE finished AND updated_at < %s LIMIT %s FOR UPDATE SKIP LOCKED)"
)
_PRUNE_CHUNK_ROWS = 2000

_NODE_COLUMNS = (
    "node_id, epoch, advertise_url, extract(epoch FROM lease_expires_at)::float8,"
    " lease_expires_at > clock_timestamp(), taken_over_by, extract(epoch FROM taken_over_at)::float8"
)

#: A new epoch for ``node``, unless another process holds a live lease on it (this log's
#: own epoch, if it holds one, it replaces at once).
_JOIN = f"""
INSERT INTO {NODES} AS n (node_id, epoch, advertise_url, lease_expires_at, joined_at)
VALUES (%(node)s, 1, %(url)s, clock_timestamp() + %(lease)s, clock_timestamp())
ON CONFLICT (node_id) DO UPDATE SET
    epoch = n.epoch + 1, advertise_url = excluded.advertise_url,
    lease_expires_at = clock_timestamp() + %(lease)s, joined_at = clock_timestamp(),
    taken_over_by = NULL, taken_over_at = NULL
WHERE n.lease_expires_at <= clock_timestamp() OR n.epoch = %(own)s
RETURNING {_NODE_COLUMNS}
"""

_HOLDER = (
    f"SELECT {_NODE_COLUMNS}, extract(epoch FROM lease_expires_at - clock_timestamp())::float8"
    f" FROM {NODES} WHERE node_id = %s"
)

_RENEW = f"""
UPDATE {NODES} SET lease_expires_at = clock_timestamp() + %(lease)s
WHERE node_id = %(node)s AND epoch = %(epoch)s AND lease_expires_at > clock_timestamp()
RETURNING {_NODE_COLUMNS}
"""

_LEAVE = f"""
UPDATE {NODES} SET lease_expires_at = clock_timestamp()
WHERE node_id = %s AND epoch = %s AND lease_expires_at > clock_timestamp()
"""

_NODES = f"SELECT {_NODE_COLUMNS} FROM {NODES} ORDER BY node_id"

#: Fence ``node`` at the epoch the taker saw, if its lease ran out and nobody took it
#: over yet. The second branch matches when an earlier attempt of this very takeover
#: committed but its answer was lost: the takeover stands, and is finished again.
_BUMP = f"""
UPDATE {NODES} SET epoch = %(next)s, taken_over_by = %(me)s,
    taken_over_at = CASE WHEN epoch = %(epoch)s THEN clock_timestamp() ELSE taken_over_at END
WHERE node_id = %(node)s AND (
    (epoch = %(epoch)s AND lease_expires_at <= clock_timestamp() AND taken_over_by IS NULL)
    OR (epoch = %(next)s AND taken_over_by = %(me)s))
RETURNING epoch
"""

#: One statement, on the (owner, gtid) index of unfinished records. It runs after the
#: bump, in a snapshot of its own (READ COMMITTED), so it sees every batch the old owner
#: committed before the bump got its node row.
_MOVE = f"UPDATE {TRANSACTIONS} SET owner = %(me)s WHERE owner = %(node)s AND NOT finished"

#: Tries of a read or a replica call before the database counts as away.
_ATTEMPTS = 3


def _node(row: Sequence[Any]) -> NodeRecord:
    node_id, epoch, url, expires_at, alive, taken_over_by, taken_over_at = row[:7]
    return NodeRecord(node_id, epoch, url, expires_at, alive, taken_over_by, taken_over_at)


class PostgresLog(DecisionLog):
    """The decision log in the PostgreSQL database ``dsn``, shared by every replica.

    ``pool_size`` counts every connection this replica keeps to it: the writer's own
    and a pool for the rest. ``timeout`` bounds a read or a replica call (then
    :class:`LogUnavailable`); a forced write has no such bound, it waits for the
    database to come back. ``lazy_delay`` and ``timer`` are as for the SQLite log.
    """

    def __init__(
        self,
        dsn: str,
        pool_size: int = 8,
        *,
        timeout: float = 5.0,
        lazy_delay: float = 0.02,
        timer: Timer | None = None,
        unsafe_unfenced: bool = False,
    ) -> None:
        """``unsafe_unfenced``: broken on purpose (see ``log.unsafe_unfenced_decisions``)."""
        if pool_size < 2:
            raise ValueError("the PostgreSQL log needs at least two connections (pool_size >= 2)")
        self._dsn = dsn
        self._pool_size = pool_size
        self._timeout = timeout
        self._lazy_delay = lazy_delay
        self._timer = timer
        self._unsafe_unfenced = unsafe_unfenced
        self._connect_kwargs: dict[str, Any] = {}
        self._pool: AsyncConnectionPool | None = None
        self._writer: PostgresWriter | None = None
        #: This replica's node id, from its first join on.
        self._node_id: str | None = None
        self._lease = timedelta(0)

    # -- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, create or migrate the tables, check this role's rights; raises
        :class:`LogUnavailable` saying what to do when any of it fails."""
        try:
            params = conninfo_to_dict(self._dsn)
        except psycopg.Error as exc:
            raise LogUnavailable(connect_failure(exc)) from exc
        self._connect_kwargs = {"autocommit": True}
        if "connect_timeout" not in params:
            self._connect_kwargs["connect_timeout"] = max(2, round(self._timeout))
        if "application_name" not in params:
            self._connect_kwargs["application_name"] = "twopc-coordinator"
        # One plain connection first: it fails at once with the server's reason, where
        # a pool would retry until its timeout. The writer keeps it.
        try:
            conn = await self._connect()
        except (psycopg.Error, OSError) as exc:
            raise LogUnavailable(connect_failure(exc)) from exc
        try:
            try:
                await prepare_schema(conn)
            except psycopg.Error as exc:
                raise LogUnavailable(f"could not set up the decision log's tables: {reason(exc)}") from exc
            self._pool = await self._open_pool()
        except BaseException:
            await conn.close()
            raise
        self._writer = PostgresWriter(
            self._connect,
            lazy_delay=self._lazy_delay,
            timeout=2 * self._timeout,
            timer=self._timer,
            unsafe_unfenced=self._unsafe_unfenced,
        )
        await self._writer.start(conn)

    async def close(self) -> None:
        try:
            if self._writer is not None:
                await self._writer.close()
        finally:
            if self._pool is not None:
                await self._pool.close()
            self._writer = self._pool = None

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        conn = await psycopg.AsyncConnection.connect(self._dsn, **self._connect_kwargs)
        try:
            await _configure(conn)
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _open_pool(self) -> AsyncConnectionPool:
        pool = AsyncConnectionPool(
            self._dsn,
            min_size=1,
            max_size=self._pool_size - 1,
            kwargs=self._connect_kwargs,
            configure=_configure,
            timeout=self._timeout,
            # The pool backs off between reconnections (1 s, 2 s, 4 s...) until it gives
            # a connection up; then the next read connects at once. Giving up soon keeps
            # reads from lagging far behind a database that came back.
            reconnect_timeout=self._timeout,
            open=False,
            name="twopc-log",
        )
        try:
            await pool.open(wait=True, timeout=self._timeout)
        except PoolTimeout as exc:
            await pool.close()
            raise LogUnavailable(
                f"the decision log's database took the first connection but no more within {self._timeout:.0f}s:"
                " check its max_connections and the role's connection limit"
            ) from exc
        return pool

    # -- writes ------------------------------------------------------------------------

    def save(self, record: TransactionRecord) -> None:
        self._check_joined()
        self._committer.write(record)

    async def force(self, record: TransactionRecord) -> None:
        self._check_joined()
        await self._committer.write_durable(record)

    async def sync(self) -> None:
        """Return once every write queued so far is durable, or dropped as fenced."""
        await self._committer.flush()

    async def claim(self, record: TransactionRecord) -> TransactionRecord | None:
        if record.idempotency_key is None:
            raise ValueError(f"{record.gtid} carries no Idempotency-Key to claim")
        self._check_joined()
        return await self._committer.claim(record)

    async def prune(self, finished_before: float) -> int:
        pruned = 0
        while True:
            deleted = await self._with_connection(_deleted(finished_before))
            pruned += deleted
            if deleted < _PRUNE_CHUNK_ROWS:
                return pruned

    async def append_audit(self, entry: AuditEntry) -> AuditEntry:
        rows = await self._rows(
            f"INSERT INTO {AUDIT} (at, actor, action, gtid, participant, reason, details)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb) RETURNING id",
            (
                entry.at,
                entry.actor,
                entry.action,
                entry.gtid,
                entry.participant,
                entry.reason,
                orjson.dumps(entry.details).decode(),
            ),
        )
        return dataclasses.replace(entry, id=int(rows[0][0]))

    async def audit(self, limit: int, before_id: int | None) -> list[AuditEntry]:
        rows = await self._rows(
            f"SELECT id, at, actor, action, reason, gtid, participant, details FROM {AUDIT}"
            " WHERE id < %s ORDER BY id DESC LIMIT %s",
            (before_id if before_id is not None else 2**63 - 1, limit),
        )
        return [AuditEntry(*row) for row in rows]

    # -- reads --------------------------------------------------------------------------

    async def get(self, gtid: str) -> TransactionRecord | None:
        rows = await self._rows(f"SELECT {COLUMNS} FROM {TRANSACTIONS} WHERE gtid = %s", (gtid,))
        return from_row(rows[0]) if rows else None

    async def page(
        self, state: str | None, limit: int, after_gtid: str | None, heuristic: bool | None = None
    ) -> list[TransactionRecord]:
        sql = f"SELECT {COLUMNS} FROM {TRANSACTIONS} WHERE gtid > %s"
        params: list[object] = [after_gtid or ""]
        if state is not None:
            sql += " AND state = %s"
            params.append(state)
        if heuristic is not None:
            sql += " AND heuristic = %s"
            params.append(heuristic)
        sql += " ORDER BY gtid LIMIT %s"
        params.append(limit)
        return [from_row(row) for row in await self._rows(sql, params)]

    async def unfinished(self) -> list[TransactionRecord]:
        node_id = self._check_joined()
        sql = f"SELECT {COLUMNS} FROM {TRANSACTIONS} WHERE owner = %s AND NOT finished ORDER BY gtid"
        return [from_row(row) for row in await self._rows(sql, (node_id,))]

    async def idempotency_keys(self, since: float) -> dict[str, IdempotencyEntry]:
        sql = (
            f"SELECT idempotency_key, gtid, request_hash, created_at FROM {TRANSACTIONS}"
            " WHERE idempotency_key IS NOT NULL AND created_at >= %s"
        )
        return {row[0]: IdempotencyEntry(row[1], row[2], row[3]) for row in await self._rows(sql, (since,))}

    @property
    def stats(self) -> LogStats:
        s = self._committer.stats
        return LogStats(commits=s.commits, durable_writes=s.durable_writes)

    def observe_commits(self, observer: CommitObserver) -> None:
        self._committer.stats.observer = observer

    # -- replicas -----------------------------------------------------------------------

    @property
    def shared(self) -> bool:
        return True

    async def join(self, node_id: str, advertise_url: str, lease: float) -> NodeRecord:
        if lease <= 0:
            raise ValueError("a lease must last longer than 0 seconds")
        writer = self._committer
        own = writer.fence.epoch if writer.fence is not None and writer.fence.node_id == node_id else -1
        params = {"node": node_id, "url": advertise_url, "lease": timedelta(seconds=lease), "own": own}
        seen: NodeRecord | None = None
        while True:
            rows = await self._rows(_JOIN, params)
            if rows:
                me = _node(rows[0])
                self._node_id, self._lease = node_id, timedelta(seconds=lease)
                writer.fence = Fence(node_id, me.epoch)
                return me
            held = await self._rows(_HOLDER, (node_id,))
            if not held:
                continue  # the row went away meanwhile: try again
            holder, remaining = _node(held[0]), float(held[0][7])
            if seen is not None and (holder.epoch, holder.lease_expires_at) != (seen.epoch, seen.lease_expires_at):
                raise NodeIdInUse(
                    f"node id {node_id!r} is in use: the replica at {holder.advertise_url} (epoch {holder.epoch}) "
                    "keeps its lease alive; give every replica a node_id of its own"
                )
            seen = holder
            log.info(
                "waiting out the lease of an earlier replica with this node id",
                node=node_id,
                holder=holder.advertise_url,
                seconds=round(remaining, 3),
            )
            # A little past its end by the database's clock, which is what decides.
            await asyncio.sleep(max(remaining, 0.0) + 0.05)

    async def renew(self) -> NodeRecord:
        fence = self._fence()
        rows = await self._rows(_RENEW, {"node": fence.node_id, "epoch": fence.epoch, "lease": self._lease})
        if not rows:
            self._lost(fence)
            raise Fenced(f"the lease of {fence.node_id} epoch {fence.epoch} ran out or was taken over")
        return _node(rows[0])

    async def leave(self) -> None:
        writer = self._committer
        fence = writer.fence
        if fence is None:
            return
        try:
            # What is queued goes in under the lease it was written under.
            await asyncio.wait_for(writer.flush(), self._timeout)
        except TimeoutError:
            # The lease stays, and so do the writes: closing the log tries them once more.
            raise LogUnavailable("could not end the lease: the log's database does not answer") from None
        self._lost(fence)
        await self._rows(_LEAVE, (fence.node_id, fence.epoch), returns=False)

    async def nodes(self) -> list[NodeRecord]:
        return [_node(row) for row in await self._rows(_NODES, ())]

    async def take_over(self, node: NodeRecord) -> int | None:
        fence = self._fence()
        if node.node_id == fence.node_id:
            raise ValueError("a replica cannot take itself over")
        params = {"me": fence.node_id, "node": node.node_id, "epoch": node.epoch, "next": node.epoch + 1}

        async def take(conn: psycopg.AsyncConnection[Any]) -> int | None:
            moved: int | None = None
            async with conn.transaction() as tx:
                # A taker is a writer like any other: fenced on its own lease first.
                cur = await conn.execute(FENCE, (fence.node_id, fence.epoch))
                if await cur.fetchone() is None:
                    raise _TakerFenced
                # A replica stalled inside its batch holds its node row; waiting for it
                # here would hold this replica's own row (and so its renewals) as long.
                # End the stalled session, or give up soon and try next round.
                await conn.execute("SELECT set_config('lock_timeout', %s, true)", (_TAKEOVER_LOCK_WAIT,))
                ending = asyncio.create_task(self._end_stalled_holders(conn.info.backend_pid, node.node_id))
                try:
                    cur = await conn.execute(_BUMP, params)
                except psycopg.errors.LockNotAvailable:
                    raise _NodeRowBusy from None
                finally:
                    ending.cancel()
                if await cur.fetchone() is None:
                    raise psycopg.Rollback(tx)  # someone was first: leave everything as it is
                cur = await conn.execute(_MOVE, params)
                moved = cur.rowcount
            return moved

        try:
            return await self._with_connection(take)
        except _TakerFenced:
            self._lost(fence)
            raise Fenced(f"{fence.node_id} epoch {fence.epoch} lost its own lease: it takes nobody over") from None
        except _NodeRowBusy:
            log.info("takeover postponed: the replica's node row is held by its stalled batch", node=node.node_id)
            return None

    async def _end_stalled_holders(self, taker_pid: int, node_id: str) -> None:
        """While the taker's epoch bump waits, end the sessions holding the node row that
        wait for their (stalled) client. Only the replica taken over locks its own row,
        its lease has run out, and a batch that loses its session is fenced when it is
        sent again. Best effort: where the server cannot end sessions, the next round
        tries again."""
        await asyncio.sleep(_STALLED_AFTER)
        try:
            ended = await self._rows(_END_STALLED_HOLDERS, (taker_pid,))
        except (LogUnavailable, psycopg.Error) as exc:
            log.info("could not end a stalled replica's session", node=node_id, error=str(exc))
            return
        if ended and ended[0][0]:
            log.warning("ended the session of a stalled replica that held its node row", node=node_id)

    # -- helpers ------------------------------------------------------------------------

    @property
    def _committer(self) -> PostgresWriter:
        if self._writer is None:
            raise RuntimeError("the log is not open")
        return self._writer

    def _check_joined(self) -> str:
        if self._node_id is None:
            raise RuntimeError("join the shared log before using it: its writes are fenced on a lease")
        return self._node_id

    def _fence(self) -> Fence:
        self._check_joined()
        fence = self._committer.fence
        if fence is None:
            raise Fenced("this replica holds no lease on the log (fenced, or it left): it must join again")
        return fence

    def _lost(self, fence: Fence) -> None:
        writer = self._committer
        if writer.fence == fence:
            writer.fence = None

    async def _rows(self, sql: str, params: Sequence[Any] | dict[str, Any], *, returns: bool = True) -> list[Any]:
        async def run(conn: psycopg.AsyncConnection[Any]) -> list[Any]:
            cur = await conn.execute(sql, params)
            return await cur.fetchall() if returns else []

        return await self._with_connection(run)

    async def _with_connection(self, work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]) -> T:
        """``work`` on a pooled connection; tried again on a transient fault (a stale
        connection after the server restarted, a serialization failure), then
        :class:`LogUnavailable`."""
        if self._pool is None:
            raise RuntimeError("the log is not open")
        for attempt in range(_ATTEMPTS):
            try:
                async with asyncio.timeout(self._timeout):
                    async with self._pool.connection() as conn:
                        return await work(conn)
            except (psycopg.Error, TimeoutError, OSError) as exc:
                if not is_transient(exc):
                    raise LogUnavailable(f"the decision log's database refused: {reason(exc)}") from exc
                if attempt + 1 == _ATTEMPTS or isinstance(exc, PoolTimeout | TimeoutError):
                    raise LogUnavailable(f"the decision log's database does not answer: {reason(exc)}") from exc
                await asyncio.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")


class _TakerFenced(Exception):
    """The replica taking another over found its own lease gone."""


class _NodeRowBusy(Exception):
    """The node row to take over is locked (its replica stalled inside a batch)."""


async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
    """Every connection of the log: fast JSON, READ COMMITTED (the takeover's move reads
    what committed while it waited), and no stalled transaction left holding locks."""
    set_json_loads(orjson.loads, conn)
    await conn.execute(
        "SELECT set_config('idle_in_transaction_session_timeout', %s, false),"
        " set_config('default_transaction_isolation', 'read committed', false),"
        # A replica cut off from the database: the server finds the session dead (and
        # frees what it holds) in seconds rather than the system's hours.
        " set_config('tcp_keepalives_idle', '5', false),"
        " set_config('tcp_keepalives_interval', '1', false),"
        " set_config('tcp_keepalives_count', '3', false)",
        (STALLED_TRANSACTION_TIMEOUT,),
    )


def _deleted(finished_before: float) -> Callable[[psycopg.AsyncConnection[Any]], Awaitable[int]]:
    async def delete(conn: psycopg.AsyncConnection[Any]) -> int:
        cur = await conn.execute(_PRUNE_CHUNK, (finished_before, _PRUNE_CHUNK_ROWS))
        return cur.rowcount

    return delete
