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

__all__ = ["DSN_ENV_VAR", "database_dsn", "scratch_database", "server_dsn"]

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
    whatever transactions were left prepared in it."""
    name = f"twopc_{label}_{secrets.token_hex(4)}"
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
        await admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield database_dsn(dsn, name)
        finally:
            await _drop(admin, dsn, name)


async def _drop(admin: psycopg.AsyncConnection, dsn: str, name: str) -> None:
    # A database with prepared transactions in it cannot be dropped: roll them back
    # first (only this scratch database's, which nothing else uses).
    async with await psycopg.AsyncConnection.connect(database_dsn(dsn, name), autocommit=True) as conn:
        for xid in await conn.tpc_recover():
            if xid.database == name:
                await conn.tpc_rollback(xid)
    await admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
