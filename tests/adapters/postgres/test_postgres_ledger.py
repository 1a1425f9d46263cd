"""The bank's ledger on a real database: a booking is an early-prepared branch, an event
is booked once however often it is delivered, and what a checker needs is counted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from aiohttp import web

from adapters.postgres.bank import PARTICIPANT, build_app
from adapters.postgres.ledger import ledger_size
from participant_sdk.testing import ParticipantTestServer, StubCoordinator

SECRET = "bank-secret"


@pytest.fixture
async def bank(tmp_path: Path, database: str, coordinator: tuple[StubCoordinator, str]) -> Any:
    def service(**options: Any) -> web.Application:
        return build_app("bank-l", database, coordinator[1], SECRET, tmp_path, inquiry_interval=60.0, pool_size=2)

    server = ParticipantTestServer(service, "bank-l", SECRET, participant_key=PARTICIPANT)
    await server.start()
    yield server
    await server.stop()


def entry(event: str, amount: int = 10) -> dict[str, object]:
    return {"event_id": event, "account": "orders", "amount": amount}


async def book(bank: ParticipantTestServer, gtid: str, *events: str) -> tuple[int, Any]:
    response = await bank.http.post("/ledger", data=orjson.dumps({"gtid": gtid, "entries": [entry(e) for e in events]}))
    return response.status, await response.json()


async def ledger_rows(dsn: str) -> dict[str, tuple[str, int]]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cursor = await conn.execute("SELECT event_id, gtid, deliveries FROM ledger")
        return {event: (gtid, deliveries) for event, gtid, deliveries in await cursor.fetchall()}


async def test_a_booking_is_applied_only_when_the_transaction_commits(
    bank: ParticipantTestServer, database: str
) -> None:
    assert await book(bank, "g1", "e1", "e2") == (
        201,
        {"gtid": "g1", "branch": "bank-l", "vote": "yes", "entries": 2, "new": 2},
    )
    assert await ledger_rows(database) == {}  # prepared, not committed
    await bank.commit("g1")
    assert await ledger_rows(database) == {"e1": ("g1", 1), "e2": ("g1", 1)}
    assert await ledger_size(database) == 2

    assert (await book(bank, "g2", "e3"))[0] == 201
    await bank.abort("g2")
    assert "e3" not in await ledger_rows(database)


async def test_an_event_booked_twice_stays_one_row_and_counts_its_deliveries(
    bank: ParticipantTestServer, database: str
) -> None:
    await book(bank, "g1", "e1")
    await bank.commit("g1")
    status, answer = await book(bank, "g2", "e1", "e2")
    assert (status, answer["new"]) == (201, 1)
    await bank.commit("g2")

    assert await ledger_rows(database) == {"e1": ("g1", 2), "e2": ("g2", 1)}
    summary = await (await bank.http.get("/ledger")).json()
    assert summary == {"events": 2, "redelivered": 1, "redelivered_events": [{"event_id": "e1", "deliveries": 2}]}


@pytest.mark.parametrize(
    "body",
    [
        {"gtid": "g1", "entries": []},
        {"gtid": "g1", "entries": [{"event_id": "", "account": "orders", "amount": 1}]},
        {"gtid": "g1", "entries": [{"event_id": "e", "account": "orders", "amount": "1"}]},
        {"gtid": "not a gtid", "entries": [entry("e")]},
        {"gtid": "g1", "entries": [entry("e")], "extra": 1},
    ],
)
async def test_a_malformed_booking_is_a_422_naming_the_field(
    bank: ParticipantTestServer, body: Any, database: str
) -> None:
    response = await bank.http.post("/ledger", data=orjson.dumps(body))
    assert response.status == 422
    assert (await response.json())["error"]["code"] == "invalid_request"
    assert await ledger_rows(database) == {}


async def test_a_ledger_not_made_yet_holds_no_events(database: str) -> None:
    assert await ledger_size(database) == 0
