"""Test harness for the PostgreSQL adapter: a real database, a participant around a
PostgresResource mounted under /twopc on a real test server, a stub coordinator."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psycopg
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from adapters.postgres import PostgresResource
from participant_sdk import Participant, PrepareResult
from participant_sdk.testing import call_participant
from twopc_core.testing import wait_until

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


class PgService:
    """One participant service on a real database; :meth:`restart` keeps the log file
    (or, with ``lose_log=True``, starts on a fresh one, as after losing the disk)."""

    def __init__(self, tmp_path: Path, dsn: str, coordinator_url: str, **resource_options: Any) -> None:
        self.tmp_path = tmp_path
        self.dsn = dsn
        self.coordinator_url = coordinator_url
        self.resource_options = {"handler": items_handler, "pool_size": 4, **resource_options}
        self.log_path = tmp_path / "participant.db"
        self.participant_options: dict[str, Any] = {"inquiry_interval": 60.0}
        self.participant: Participant
        self.resource: PostgresResource
        self.client: TestClient | None = None
        self.generation = 0

    async def start(self, **participant_options: Any) -> PgService:
        self.participant_options.update(participant_options)
        self.resource = PostgresResource(self.dsn, NAME, **self.resource_options)
        self.participant = Participant(
            NAME, self.resource, SECRET, self.coordinator_url, self.log_path, **self.participant_options
        )
        app = web.Application()
        app.add_subapp("/twopc", self.participant.app())
        self.client = TestClient(TestServer(app))
        await self.client.start_server()
        await wait_until(lambda: self.participant.inquiry_rounds >= 1, message="first inquiry round")
        return self

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None

    async def restart(self, lose_log: bool = False, **participant_options: Any) -> PgService:
        await self.stop()
        if lose_log:
            self.generation += 1
            self.log_path = self.tmp_path / f"participant-{self.generation}.db"
        return await self.start(**participant_options)

    async def call(self, operation: str, body: dict[str, Any]) -> tuple[int, Any]:
        assert self.client is not None
        return await call_participant(self.client, f"/twopc/{operation}", operation, body, SECRET)

    async def prepare(self, gtid: str, payload: Any) -> tuple[int, Any]:
        body = {"gtid": gtid, "branch": NAME, "payload": payload, "deadline": time.time() + 30}
        return await self.call("prepare", body)

    async def commit(self, gtid: str, **extra: Any) -> tuple[int, Any]:
        return await self.call("commit", {"gtid": gtid, "branch": NAME, **extra})

    async def abort(self, gtid: str) -> tuple[int, Any]:
        return await self.call("abort", {"gtid": gtid, "branch": NAME})

    async def status(self, gtid: str) -> str:
        status, body = await self.call("status", {"gtid": gtid, "branch": NAME})
        assert status == 200, body
        return body["status"]

    def gid(self, gtid: str) -> str:
        return self.resource.gids.gid(gtid, NAME)
