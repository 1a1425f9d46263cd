"""Test harness for the PostgreSQL adapter: a real database, a participant around a
PostgresResource mounted under /twopc on a participant test server, helpers that look
at the database behind its back."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import psycopg

from adapters.postgres import PostgresResource
from participant_sdk import Participant, PrepareResult
from participant_sdk.testing import ParticipantTestServer

SECRET = "pg-test-secret"
NAME = "pg1"

ITEMS_DDL = "CREATE TABLE IF NOT EXISTS items (id text PRIMARY KEY, note text NOT NULL)"


async def items_handler(conn: psycopg.AsyncConnection, gtid: str, branch: str, payload: Any) -> PrepareResult | None:
    """Work at prepare for the tests: ``{"id", "note"}`` inserts a row; ``{"vote": "no"}``
    votes no; ``{"read_only": true}`` reads only; ``{"update": id}`` locks a row."""
    if payload.get("vote") == "no":
        await conn.execute("INSERT INTO items VALUES ('never', 'rolled back')")
        return PrepareResult.no("asked to vote no")
    if payload.get("read_only"):
        await conn.execute("SELECT count(*) FROM items")
        return PrepareResult.read_only()
    if "update" in payload:
        await conn.execute("UPDATE items SET note = %s WHERE id = %s", [gtid, payload["update"]])
        return None
    await conn.execute("INSERT INTO items (id, note) VALUES (%(id)s, %(note)s)", payload)
    return None


def items_statement(gtid: str, branch: str, payload: Any) -> tuple[str, Sequence[Any]] | PrepareResult:
    """The same work as :func:`items_handler`, as one statement (``PrepareStatement``)."""
    if payload.get("vote") == "no":
        return PrepareResult.no("asked to vote no")
    if "update" in payload:
        return "UPDATE items SET note = %s WHERE id = %s", [gtid, payload["update"]]
    return "INSERT INTO items (id, note) VALUES (%s, %s)", [payload["id"], payload["note"]]


async def rows(dsn: str) -> dict[str, str]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cursor = await conn.execute("SELECT id, note FROM items ORDER BY id")
        return dict(await cursor.fetchall())


async def prepared_gids(dsn: str) -> list[str]:
    """Every prepared transaction in the DSN's database, whoever made it."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT gid FROM pg_prepared_xacts WHERE database = current_database() ORDER BY gid"
        )
        return [gid for (gid,) in await cursor.fetchall()]


async def prepare_by_hand(dsn: str, gid: str, note: str = "by hand") -> None:
    """A prepared transaction that no participant made (an operator's, another tool's)."""
    conn = await psycopg.AsyncConnection.connect(dsn)
    try:
        await conn.tpc_begin(gid)
        await conn.execute("INSERT INTO items VALUES (%s, %s)", [gid, note])
        await conn.tpc_prepare()
    finally:
        await conn.close()  # not `async with`: its commit() refuses a prepared two-phase state


async def create_items(dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(ITEMS_DDL)


class PgService(ParticipantTestServer):
    """One participant service on a real database; :meth:`restart` keeps the log file
    (or, with ``lose_log=True``, starts on a fresh one, as after losing the disk)."""

    def __init__(self, tmp_path: Path, dsn: str, coordinator_url: str, **resource_options: Any) -> None:
        self.log_path = tmp_path / "participant.db"
        self._generation = 0
        resource_options = {"handler": items_handler, "pool_size": 4, **resource_options}

        def participant(**options: Any) -> Participant:
            resource = PostgresResource(dsn, NAME, **resource_options)
            return Participant(
                name=NAME,
                resource=resource,
                secret=SECRET,
                coordinator_url=coordinator_url,
                log_path=self.log_path,
                **options,
            )

        super().__init__(participant, NAME, SECRET, options={"inquiry_interval": 60.0})

    async def restart(self, lose_log: bool = False, **options: Any) -> Self:
        if lose_log:
            await self.stop()
            self._generation += 1
            self.log_path = self.log_path.with_name(f"participant-{self._generation}.db")
        return await super().restart(**options)

    @property
    def resource(self) -> PostgresResource:
        resource = self.participant.resource
        assert isinstance(resource, PostgresResource)
        return resource

    def gid(self, gtid: str) -> str:
        return self.resource.gids.gid(gtid, NAME)
