"""Reading ``pg_prepared_xacts``: this participant's prepared transactions, their
health figures, and whether the server allows enough of them."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

import psycopg

from adapters.postgres.errors import PostgresSetupError
from adapters.postgres.gids import GidScheme

__all__ = ["PreparedBranch", "PreparedStats", "check_prepared_capacity", "list_prepared", "prepared_stats"]


@dataclass(frozen=True, slots=True)
class PreparedBranch:
    gid: str
    gtid: str
    branch: str
    prepared_at: datetime
    owner: str
    database: str

    def age(self, now: float | None = None) -> float:
        return max(0.0, (time.time() if now is None else now) - self.prepared_at.timestamp())


@dataclass(frozen=True, slots=True)
class PreparedStats:
    """How many of this participant's transactions are prepared, and the oldest one's age."""

    count: int
    oldest_age_seconds: float | None

    def as_dict(self) -> dict[str, float | int | None]:
        return {"count": self.count, "oldest_age_seconds": self.oldest_age_seconds}


async def list_prepared(conn: psycopg.AsyncConnection, scheme: GidScheme) -> list[PreparedBranch]:
    """This participant's prepared transactions in the connection's database.

    ``tpc_recover`` lists every prepared transaction on the server; only those with this
    scheme's prefix *and* in this database are ours.
    """
    database = await _current_database(conn)
    found = []
    for xid in await conn.tpc_recover():
        gid = str(xid)
        parsed = scheme.parse(gid)
        if parsed is None or xid.database != database or xid.prepared is None:
            continue
        found.append(PreparedBranch(gid, *parsed, xid.prepared, xid.owner or "", xid.database))
    return sorted(found, key=lambda b: b.prepared_at)


async def prepared_stats(conn: psycopg.AsyncConnection, scheme: GidScheme) -> PreparedStats:
    branches = await list_prepared(conn, scheme)
    if not branches:
        return PreparedStats(0, None)
    return PreparedStats(len(branches), round(branches[0].age(), 3))


async def check_prepared_capacity(conn: psycopg.AsyncConnection, needed: int) -> int:
    """The server's ``max_prepared_transactions``; PostgresSetupError if it is 0 or below
    ``needed`` (every connection of the participant's pool may hold one prepared branch)."""
    cursor = await conn.execute("SELECT current_setting('max_prepared_transactions')::int")
    row = await cursor.fetchone()
    allowed = int(row[0]) if row else 0
    where = f"{conn.info.host}:{conn.info.port}/{conn.info.dbname}"
    advice = (
        f"set max_prepared_transactions to at least {needed} (no less than max_connections is wise) "
        "in postgresql.conf and restart PostgreSQL"
    )
    if allowed == 0:
        raise PostgresSetupError(
            f"PostgreSQL at {where} has max_prepared_transactions = 0, so PREPARE TRANSACTION is "
            f"disabled and it cannot take part in two-phase commit: {advice}"
        )
    if allowed < needed:
        raise PostgresSetupError(
            f"PostgreSQL at {where} allows {allowed} prepared transactions (max_prepared_transactions), "
            f"fewer than the {needed} this participant may hold at once: {advice}"
        )
    return allowed


async def _current_database(conn: psycopg.AsyncConnection) -> str:
    cursor = await conn.execute("SELECT current_database()")
    row = await cursor.fetchone()
    return str(row[0]) if row else ""
