"""The bank's ledger: one row per business event, written inside a global transaction.

A stream job (``twopc pipeline serve``) books each event it consumes here, by early
prepare: ``POST /ledger {"gtid", "entries": [{"event_id", "account", "amount"}]}``
applies the rows inside the bank's branch of ``gtid`` and enlists the bank as voted yes.

The ledger is an idempotent sink: ``event_id`` is its primary key, so a second booking
of one event adds no row; it counts the booking in ``deliveries`` instead, so that a
checker can tell an exactly-once pipeline (every row delivered once) from an
at-least-once one. ``GET /ledger`` says how many events are booked and which were
delivered more than once.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import psycopg
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from participant_sdk import Participant
from twopc_core.http import invalid_body, json_response
from twopc_core.protocol import GTID_PATTERN

__all__ = ["LEDGER_SCHEMA", "LedgerBooking", "LedgerEntry", "book", "ledger_routes", "ledger_size"]

LEDGER_SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger (
    event_id   text PRIMARY KEY,
    gtid       text NOT NULL,
    account    text NOT NULL,
    amount     bigint NOT NULL,
    deliveries integer NOT NULL DEFAULT 1,
    booked_at  timestamptz NOT NULL DEFAULT now()
);
"""
_BIGINT = 2**63 - 1
#: Entries one booking may carry (a batch of events).
MAX_ENTRIES = 10_000
#: Event ids listed by ``GET /ledger`` among those delivered more than once.
_SHOWN = 100


class LedgerEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    event_id: str = Field(min_length=1, max_length=200)
    account: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
    amount: int = Field(ge=-_BIGINT, le=_BIGINT)


class LedgerBooking(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    gtid: str = Field(pattern=GTID_PATTERN)
    entries: list[LedgerEntry] = Field(min_length=1, max_length=MAX_ENTRIES)


async def book(conn: psycopg.AsyncConnection, gtid: str, entries: list[LedgerEntry]) -> int:
    """Book ``entries`` on ``conn`` (inside the branch), in one statement; how many were new events."""
    cursor = await conn.execute(
        "INSERT INTO ledger (event_id, gtid, account, amount)"
        " SELECT e, %s, a, m FROM unnest(%s::text[], %s::text[], %s::bigint[]) AS t(e, a, m)"
        " ON CONFLICT (event_id) DO UPDATE SET deliveries = ledger.deliveries + 1"
        " RETURNING deliveries",
        [gtid, [e.event_id for e in entries], [e.account for e in entries], [e.amount for e in entries]],
    )
    return sum(1 for (deliveries,) in await cursor.fetchall() if deliveries == 1)


async def ledger_size(dsn: str) -> int:
    """How many events the ledger in ``dsn`` holds; 0 before the bank has made it."""
    try:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            row = await (await conn.execute("SELECT count(*) FROM ledger")).fetchone()
            return int(row[0]) if row else 0
    except psycopg.errors.UndefinedTable:
        return 0


def ledger_routes(
    participant: web.AppKey[Participant],
    connection: Callable[[], AbstractAsyncContextManager[psycopg.AsyncConnection]],
) -> list[web.RouteDef]:
    """The ledger's routes; ``connection()`` gives a pooled connection for reads."""

    async def _book(request: web.Request) -> web.Response:
        try:
            booking = LedgerBooking.model_validate_json(await request.read())
        except ValidationError as exc:
            raise invalid_body(exc, what="the body") from None
        owner = request.app[participant]
        async with owner.branch(booking.gtid) as conn:
            new = await book(conn, booking.gtid, booking.entries)
        body = {"gtid": booking.gtid, "branch": owner.name, "vote": "yes", "entries": len(booking.entries), "new": new}
        return json_response(body, 201)

    async def _summary(_request: web.Request) -> web.Response:
        async with connection() as conn:
            cursor = await conn.execute("SELECT count(*), count(*) FILTER (WHERE deliveries > 1) FROM ledger")
            row = await cursor.fetchone()
            events, redelivered = row if row is not None else (0, 0)
            cursor = await conn.execute(
                "SELECT event_id, deliveries FROM ledger WHERE deliveries > 1 ORDER BY event_id LIMIT %s", [_SHOWN]
            )
            shown = [{"event_id": e, "deliveries": d} for e, d in await cursor.fetchall()]
        return json_response({"events": events, "redelivered": redelivered, "redelivered_events": shown})

    return [web.post("/ledger", _book), web.get("/ledger", _summary)]
