"""Tools for tests that need a real PostgreSQL: find the server, make scratch databases.

The server is the one ``TWOPC_TEST_POSTGRES_DSN`` names, else the one ``twopc dev up
postgres`` started (``var/dev/services.json``). Its role must be allowed to create
databases. There is no skipping: without a server, :func:`server_dsn` raises, saying how
to get one.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from compose.dev import read_services

__all__ = ["DSN_ENV_VAR", "database_dsn", "drop_database", "scratch_database", "server_dsn"]

DSN_ENV_VAR = "TWOPC_TEST_POSTGRES_DSN"


def server_dsn() -> str:
    """A DSN of the test server that answers; RuntimeError saying how to get one if none."""
    dsn = os.environ.get(DSN_ENV_VAR)
    source = DSN_ENV_VAR
    if not dsn:
        dsn = read_services().get("postgres", {}).get("dsn")
        source = "var/dev/services.json (twopc dev up postgres)"
    if not dsn:
        raise RuntimeError(
            "no PostgreSQL server for the tests: run `twopc dev up postgres` (make test does) "
            f"or set {DSN_ENV_VAR} to a DSN whose role may create databases"
        )
    try:
        with psycopg.connect(dsn, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        raise RuntimeError(
            f"the PostgreSQL server from {source} does not answer ({exc}); "
            "start it with `twopc dev up postgres` or fix the DSN"
        ) from exc
    return dsn


def database_dsn(dsn: str, database: str) -> str:
    """The same server and role, another database."""
    return make_conninfo(dsn, dbname=database)


@asynccontextmanager
async def scratch_database(dsn: str, label: str = "t") -> AsyncIterator[str]:
    """A new, empty database on ``dsn``'s server for one test; dropped afterwards with
    whatever was left in it (see :func:`drop_database`)."""
    name = f"twopc_{label}_{secrets.token_hex(4)}"
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
        await admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield database_dsn(dsn, name)
    finally:
        await drop_database(dsn, name)


#: The sessions of this role in a database, ended (a role may end its own).
_END_OWN_SESSIONS = (
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
    " WHERE datname = %s AND usename = current_user AND pid <> pg_backend_pid()"
)


async def drop_database(dsn: str, name: str) -> None:
    """Drop the database ``name`` on ``dsn``'s server, which ``dsn``'s role made and
    nothing else uses, with whatever was left in it: transactions left prepared, the
    role's own sessions, an autovacuum worker. Nothing if it is already gone.

    Not ``WITH (FORCE)``: that refuses when an autovacuum worker is in the database and
    the role is not a superuser, while a plain drop stops the worker itself."""
    try:
        conn = await psycopg.AsyncConnection.connect(database_dsn(dsn, name), autocommit=True)
    except psycopg.OperationalError:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
            cur = await admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
            if await cur.fetchone() is None:
                return
        raise
    async with conn:
        # A database with prepared transactions in it cannot be dropped.
        for xid in await conn.tpc_recover():
            if xid.database == name:
                await conn.tpc_rollback(xid)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
        # No session comes back between ending them and the drop.
        await admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(sql.Identifier(name)))
        await admin.execute(_END_OWN_SESSIONS, [name])
        await admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
