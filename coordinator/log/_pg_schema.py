"""The PostgreSQL log's tables, created and migrated by the log itself when it opens.

The tables live in the connection's current schema (the first of its ``search_path``),
so a deployment can give the log a schema of its own; their names carry a ``twopc_``
prefix so that they never meet an application's tables in a shared database.

A one-row table holds the schema's version. Any number of replicas may open the log
at once: creating that table tolerates losing the race to another replica, and a
migration runs in one transaction that first locks the version row, so the others
wait for it and then find nothing left to do. Only plain tables, row locks and
conditional writes are used (no advisory locks), as a PostgreSQL-compatible
distributed store offers them too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import errors

from coordinator.log._base import LogUnavailable
from coordinator.log._pg_faults import reason

__all__ = ["AUDIT", "NODES", "SCHEMA_VERSION", "TRANSACTIONS", "VERSION", "prepare_schema"]

TRANSACTIONS = "twopc_transactions"
AUDIT = "twopc_audit"
NODES = "twopc_nodes"
VERSION = "twopc_schema"

_CREATE_VERSION_TABLE = f"""
CREATE TABLE IF NOT EXISTS {VERSION} (
    one_row boolean PRIMARY KEY DEFAULT true CHECK (one_row),
    version integer NOT NULL,
    migrated_at timestamptz NOT NULL DEFAULT now()
)
"""

#: Migration n (counting from 1) takes the schema from version n - 1 to n; each is a
#: list of statements run in the migrating transaction. Append, never edit.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        f"""
        CREATE TABLE {TRANSACTIONS} (
            gtid text PRIMARY KEY,
            state text NOT NULL,
            decision text,
            reason text,
            one_phase boolean NOT NULL DEFAULT false,
            commit_requested boolean NOT NULL DEFAULT false,
            finished boolean NOT NULL DEFAULT false,
            -- Unix seconds by the writing coordinator's clock (the engine's times).
            created_at double precision NOT NULL,
            updated_at double precision NOT NULL,
            deadline double precision NOT NULL,
            idempotency_key text,
            request_hash text,
            metadata jsonb NOT NULL,
            branches jsonb NOT NULL,
            -- The replica that drives the transaction now: its last writer, or the
            -- replica that took the writer over.
            owner text NOT NULL
        )
        """,
        f"""CREATE UNIQUE INDEX {TRANSACTIONS}_idempotency_key ON {TRANSACTIONS} (idempotency_key)
            WHERE idempotency_key IS NOT NULL""",
        # What a restart and a takeover read and move: one owner's unfinished records.
        f"CREATE INDEX {TRANSACTIONS}_unfinished ON {TRANSACTIONS} (owner, gtid) WHERE NOT finished",
        # For pruning: a transaction enters it once, when it finishes.
        f"CREATE INDEX {TRANSACTIONS}_finished_at ON {TRANSACTIONS} (updated_at) WHERE finished",
        f"""
        CREATE TABLE {NODES} (
            node_id text PRIMARY KEY,
            epoch bigint NOT NULL,
            advertise_url text NOT NULL,
            -- By the database's clock, which alone decides whether a lease is live.
            lease_expires_at timestamptz NOT NULL,
            joined_at timestamptz NOT NULL,
            taken_over_by text,
            taken_over_at timestamptz
        )
        """,
    ),
    (
        # Who began a transaction (a token's name), whether a branch was forced against
        # its decision, and what operators did.
        f"ALTER TABLE {TRANSACTIONS} ADD COLUMN principal text",
        f"ALTER TABLE {TRANSACTIONS} ADD COLUMN heuristic boolean NOT NULL DEFAULT false",
        f"CREATE INDEX {TRANSACTIONS}_heuristic ON {TRANSACTIONS} (gtid) WHERE heuristic",
        f"""
        CREATE TABLE {AUDIT} (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            at double precision NOT NULL,
            actor text NOT NULL,
            action text NOT NULL,
            gtid text,
            participant text,
            reason text NOT NULL,
            details jsonb NOT NULL
        )
        """,
    ),
)

SCHEMA_VERSION = len(_MIGRATIONS)

_MIGRATION_ATTEMPTS = 5

#: The rights the log needs on its tables once they exist.
_RIGHTS = {
    TRANSACTIONS: ("SELECT", "INSERT", "UPDATE", "DELETE"),
    NODES: ("SELECT", "INSERT", "UPDATE"),
    AUDIT: ("SELECT", "INSERT"),
    VERSION: ("SELECT",),
}


async def prepare_schema(conn: psycopg.AsyncConnection[Any]) -> None:
    """Create or migrate the log's tables on ``conn`` (in autocommit mode), then check
    that this role may use them and that the database takes writes. Raises
    :class:`LogUnavailable` with what to do when it cannot."""
    where = await _where(conn)
    try:
        for attempt in range(_MIGRATION_ATTEMPTS):
            try:
                if await _current_version(conn) != SCHEMA_VERSION:
                    await _migrate(conn, where)
                break
            except (errors.SerializationFailure, errors.DeadlockDetected):
                # Another replica migrating at the same moment, on a store that
                # serializes DDL: its work is done or undone now; look again.
                if attempt + 1 == _MIGRATION_ATTEMPTS:
                    raise
    except errors.InsufficientPrivilege as exc:
        raise LogUnavailable(
            f"role {where.user!r} may not create the decision log's tables in schema {where.schema!r} of "
            f"database {where.database!r} ({reason(exc)}): GRANT CREATE ON SCHEMA {where.schema} TO "
            f"{where.user}, or open the log once as a role that may"
        ) from exc
    except errors.InvalidSchemaName as exc:
        raise LogUnavailable(
            f"no schema to create the decision log's tables in ({reason(exc)}): the search_path of role "
            f"{where.user!r} in database {where.database!r} names no schema that exists"
        ) from exc
    except errors.ReadOnlySqlTransaction as exc:
        raise _read_only(where) from exc
    await _check_rights(conn, where)


@dataclass(frozen=True)
class _Where:
    """Whom and where the log's tables are for: named in every message."""

    user: str
    database: str
    schema: str


async def _where(conn: psycopg.AsyncConnection[Any]) -> _Where:
    cur = await conn.execute("SELECT current_user, current_database(), coalesce(current_schema(), '(none)')")
    row = await cur.fetchone()
    assert row is not None
    return _Where(*row)


async def _current_version(conn: psycopg.AsyncConnection[Any]) -> int | None:
    cur = await conn.execute("SELECT to_regclass(%s) IS NOT NULL", (VERSION,))
    row = await cur.fetchone()
    if row is None or not row[0]:
        return None
    cur = await conn.execute(f"SELECT version FROM {VERSION}")
    row = await cur.fetchone()
    return int(row[0]) if row is not None else None


async def _migrate(conn: psycopg.AsyncConnection[Any], where: _Where) -> None:
    await _create_version_table(conn)
    async with conn.transaction():
        # The row lock makes replicas that open the log at once migrate one at a time.
        cur = await conn.execute(f"SELECT version FROM {VERSION} FOR UPDATE")
        row = await cur.fetchone()
        assert row is not None
        version = int(row[0])
        if version > SCHEMA_VERSION:
            raise LogUnavailable(
                f"the decision log in database {where.database!r} has schema version {version}, newer than "
                f"this coordinator knows ({SCHEMA_VERSION}): run the newer coordinator, or upgrade this one"
            )
        for statements in _MIGRATIONS[version:]:
            for statement in statements:
                await conn.execute(statement)
        await conn.execute(f"UPDATE {VERSION} SET version = %s, migrated_at = now()", (SCHEMA_VERSION,))


async def _create_version_table(conn: psycopg.AsyncConnection[Any]) -> None:
    for attempt in range(3):
        try:
            async with conn.transaction():
                await conn.execute(_CREATE_VERSION_TABLE)
                await conn.execute(f"INSERT INTO {VERSION} (version) VALUES (0) ON CONFLICT DO NOTHING")
            return
        except (errors.UniqueViolation, errors.DuplicateTable, errors.DuplicateObject):
            # Another replica created it between our look and our CREATE: it exists now.
            if attempt == 2:
                raise


async def _check_rights(conn: psycopg.AsyncConnection[Any], where: _Where) -> None:
    pairs = [(table, right) for table, rights in _RIGHTS.items() for right in rights]
    cur = await conn.execute(
        "SELECT t, r FROM unnest(%s::text[], %s::text[]) AS p (t, r) WHERE NOT has_table_privilege(t, r)",
        ([t for t, _ in pairs], [r for _, r in pairs]),
    )
    missing = await cur.fetchall()
    if missing:
        listed = ", ".join(f"{right} on {table}" for table, right in missing)
        tables = ", ".join(sorted({table for table, _ in missing}))
        rights = ", ".join(sorted({right for _, right in missing}))
        raise LogUnavailable(
            f"role {where.user!r} may not use the decision log's tables in database {where.database!r} "
            f"(it lacks {listed}): GRANT {rights} ON {tables} TO {where.user}"
        )
    cur = await conn.execute("SELECT current_setting('transaction_read_only') = 'on'")
    row = await cur.fetchone()
    if row is not None and row[0]:
        raise _read_only(where)


def _read_only(where: _Where) -> LogUnavailable:
    return LogUnavailable(
        f"database {where.database!r} takes no writes (transaction_read_only is on: a standby, or "
        "default_transaction_read_only is set): point log.dsn at the primary"
    )
