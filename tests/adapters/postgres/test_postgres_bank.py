"""The bank service's HTTP edge: its own errors and the participant's, as JSON through
the shared error middleware."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from adapters.postgres.bank import build_app
from participant_sdk.testing import StubCoordinator


@pytest.fixture
async def bank(tmp_path: Path, database: str, coordinator: tuple[StubCoordinator, str]) -> AsyncIterator[TestClient]:
    app = build_app("bank-a", database, coordinator[1], "bank-secret", tmp_path, inquiry_interval=60.0, pool_size=2)
    async with TestClient(TestServer(app)) as client:
        response = await client.post("/accounts", json={"id": "alice", "balance": 10})
        assert response.status == 201, await response.text()
        yield client


async def _post(bank: TestClient, path: str, body: Any) -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    async with bank.post(path, data=data) as response:
        return response.status, await response.json()


@pytest.mark.parametrize(
    ("body", "status", "code", "named"),
    [
        (b"{not json", 400, "invalid_json", "JSON"),
        ({"id": "bob"}, 201, None, None),
        ({"id": "bob", "balance": -1}, 422, "invalid_request", "balance"),
        ({"id": "alice"}, 409, "account_exists", "alice"),
    ],
)
async def test_opening_an_account_answers_bad_input_with_a_json_error_naming_it(
    bank: TestClient, body: Any, status: int, code: str | None, named: str | None
) -> None:
    answer_status, answer = await _post(bank, "/accounts", body)

    assert answer_status == status
    if code is not None:
        assert answer["error"]["code"] == code
        assert named is not None and named in answer["error"]["message"]


async def test_an_unknown_path_is_a_json_404_not_found(bank: TestClient) -> None:
    async with bank.get("/nowhere") as response:
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "not_found"


async def test_an_early_prepare_the_bank_refuses_is_a_409_vote_no(bank: TestClient, stub: StubCoordinator) -> None:
    status, answer = await _post(bank, "/early-prepare", {"gtid": "g1", "account": "alice", "delta": -11})

    assert (status, answer["error"]["code"]) == (409, "vote_no")
    assert answer["error"]["details"] == {"gtid": "g1", "account": "alice"}
    assert stub.enlisted == {}


async def test_an_early_prepare_of_a_known_branch_is_a_409_branch_exists(bank: TestClient) -> None:
    first, _ = await _post(bank, "/early-prepare", {"gtid": "g1", "account": "alice", "delta": -1})
    second, answer = await _post(bank, "/early-prepare", {"gtid": "g1", "account": "alice", "delta": -1})

    assert first == 201
    assert (second, answer["error"]["code"]) == (409, "branch_exists")


async def test_an_early_prepare_the_coordinator_refuses_is_a_409_enlist_refused(
    bank: TestClient, stub: StubCoordinator
) -> None:
    stub.refuse_enlist.add("g1")
    status, answer = await _post(bank, "/early-prepare", {"gtid": "g1", "account": "alice", "delta": -1})

    assert (status, answer["error"]["code"]) == (409, "enlist_refused")
    assert answer["error"]["details"]["coordinator_error"] == "wrong_state"


async def test_an_early_prepare_enlists_with_the_next_coordinator_replica_when_the_first_is_down(
    tmp_path: Path, database: str, coordinator: tuple[StubCoordinator, str], stopped_coordinator: str
) -> None:
    stub, url = coordinator
    app = build_app("bank-a", database, [stopped_coordinator, url], "bank-secret", tmp_path, pool_size=2)
    async with TestClient(TestServer(app)) as bank:
        opened, _ = await _post(bank, "/accounts", {"id": "alice", "balance": 10})
        status, answer = await _post(bank, "/early-prepare", {"gtid": "g1", "account": "alice", "delta": -1})

    assert opened == 201
    assert (status, answer["vote"]) == (201, "yes")
    assert stub.enlisted == {"g1": [{"name": "bank-a", "prepared": True}]}


async def test_bodies_over_the_limit_are_answered_413_as_json_by_the_bank_and_its_protocol(
    tmp_path: Path, database: str, coordinator: tuple[StubCoordinator, str]
) -> None:
    app = build_app("bank-a", database, coordinator[1], "bank-secret", tmp_path, pool_size=2, max_body_bytes=2048)
    big = {"id": "bob", "balance": 1, "pad": "x" * 4096}
    async with TestClient(TestServer(app)) as bank:
        for path in ("/accounts", "/twopc/prepare"):
            status, answer = await _post(bank, path, big)
            assert (status, answer["error"]["code"]) == (413, "body_too_large"), path
