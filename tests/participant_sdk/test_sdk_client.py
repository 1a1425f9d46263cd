"""The coordinator REST client sends the documented shapes and turns error bodies
into CoordinatorError."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from participant_sdk import Outcome, Transaction
from participant_sdk.client import CoordinatorClient, CoordinatorError


class Recorder:
    """A coordinator that records each request and answers with the next canned reply."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        # Valid as any of the client's answers (a transaction, a begin, a page).
        self.reply: tuple[int, bytes] = (200, b'{"gtid": "g1", "state": "active", "transactions": []}')
        self.replies: list[tuple[int, bytes]] = []  # answered first, in turn, before ``reply``
        self.headers: dict[str, str] = {}

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        self.requests.append(
            {
                "method": request.method,
                "path": request.path,
                "query": dict(request.query),
                "idempotency_key": request.headers.get("Idempotency-Key"),
                "body": orjson.loads(raw) if raw else None,
            }
        )
        status, body = self.replies.pop(0) if self.replies else self.reply
        return web.Response(status=status, body=body, content_type="application/json", headers=self.headers)

    @property
    def last(self) -> dict[str, Any]:
        return self.requests[-1]


@pytest.fixture
async def rest() -> AsyncIterator[tuple[Recorder, CoordinatorClient]]:
    recorder = Recorder()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", recorder.handle)
    server = TestServer(app)
    await server.start_server()
    client = CoordinatorClient(str(server.make_url("/")))
    yield recorder, client
    await client.close()
    await server.close()


async def test_begin_sends_the_body_and_the_idempotency_key(rest: tuple[Recorder, CoordinatorClient]) -> None:
    recorder, client = rest
    recorder.reply = (201, b'{"gtid": "g1", "state": "active", "deadline": "2030-01-01T00:00:00Z"}')
    answer = await client.begin(timeout_ms=500, metadata={"who": "t"}, idempotency_key="k1")

    assert (answer["gtid"], answer["replayed"]) == ("g1", False)
    assert recorder.last == {
        "method": "POST",
        "path": "/v1/transactions",
        "query": {},
        "idempotency_key": "k1",
        "body": {"timeout_ms": 500, "metadata": {"who": "t"}},
    }


async def test_begin_says_when_its_idempotency_key_had_begun_the_transaction_before(
    rest: tuple[Recorder, CoordinatorClient],
) -> None:
    recorder, client = rest
    recorder.reply = (200, b'{"gtid": "g1", "state": "committed", "deadline": "2030-01-01T00:00:00Z"}')
    recorder.headers = {"Idempotent-Replayed": "true"}
    answer = await client.begin(idempotency_key="k1")
    assert answer.replayed is True
    assert answer.deadline == datetime(2030, 1, 1, tzinfo=UTC)
    # Read as the JSON it was, too (for code written when the client returned dicts).
    assert (answer["gtid"], answer["deadline"], answer["replayed"]) == ("g1", "2030-01-01T00:00:00Z", True)


async def test_enlist_sends_only_the_fields_given(rest: tuple[Recorder, CoordinatorClient]) -> None:
    recorder, client = rest
    await client.enlist("g1", "queue-a")
    plain = recorder.last["body"]
    await client.enlist("g1", "queue-b", payload={"items": [1]}, prepared=True)

    assert plain == {"name": "queue-a"}
    assert recorder.last["path"] == "/v1/transactions/g1/participants"
    assert recorder.last["body"] == {"name": "queue-b", "payload": {"items": [1]}, "prepared": True}


async def test_commit_waits_for_all_unless_told_decision(rest: tuple[Recorder, CoordinatorClient]) -> None:
    recorder, client = rest
    await client.commit("g1")
    default_query = recorder.last["query"]
    await client.commit("g1", wait="decision")

    assert default_query == {}
    assert recorder.last["path"] == "/v1/transactions/g1/commit"
    assert recorder.last["query"] == {"wait": "decision"}


async def test_commit_refuses_an_unknown_wait(rest: tuple[Recorder, CoordinatorClient]) -> None:
    _, client = rest
    with pytest.raises(ValueError, match="wait"):
        await client.commit("g1", wait="forever")  # type: ignore[arg-type]  # a wrong value on purpose


async def test_abort_get_and_list_use_their_paths(rest: tuple[Recorder, CoordinatorClient]) -> None:
    recorder, client = rest
    await client.abort("g1")
    abort = (recorder.last["method"], recorder.last["path"])
    await client.get("g1")
    get = (recorder.last["method"], recorder.last["path"])
    await client.list(state="committed", limit=10, cursor="c2")

    assert abort == ("POST", "/v1/transactions/g1/abort")
    assert get == ("GET", "/v1/transactions/g1")
    assert recorder.last["path"] == "/v1/transactions"
    assert recorder.last["query"] == {"state": "committed", "limit": "10", "cursor": "c2"}


async def test_execute_sends_participants_in_one_call(rest: tuple[Recorder, CoordinatorClient]) -> None:
    recorder, client = rest
    participants = [{"name": "queue-a", "payload": {"items": [1]}}]
    await client.execute(participants, timeout_ms=1000, idempotency_key="k2")

    assert recorder.last["path"] == "/v1/transactions:execute"
    assert recorder.last["body"] == {"participants": participants, "timeout_ms": 1000}
    assert recorder.last["idempotency_key"] == "k2"


async def test_error_body_becomes_a_coordinator_error(rest: tuple[Recorder, CoordinatorClient]) -> None:
    recorder, client = rest
    error_body = {"error": {"code": "wrong_state", "message": "already aborted", "details": {"x": 1}}}
    recorder.reply = (409, orjson.dumps(error_body))
    with pytest.raises(CoordinatorError) as caught:
        await client.commit("g1")

    error = caught.value
    assert (error.status, error.code, error.message, error.details) == (
        409,
        "wrong_state",
        "already aborted",
        {"x": 1},
    )


async def test_error_without_a_json_body_keeps_the_status(rest: tuple[Recorder, CoordinatorClient]) -> None:
    recorder, client = rest
    recorder.reply = (502, b"<html>bad gateway</html>")
    with pytest.raises(CoordinatorError) as caught:
        await client.get("g1")

    assert caught.value.status == 502
    assert caught.value.code == "http_502"


def _view(state: str, outcome: str | None, *pending: str) -> bytes:
    branches = [{"name": "a", "state": "committed", "pending": False}]
    branches += [{"name": name, "state": "prepared", "pending": True} for name in pending]
    return orjson.dumps({"gtid": "g1", "state": state, "outcome": outcome, "branches": branches})


async def test_a_transaction_is_typed_as_the_coordinator_describes_it(rest: tuple[Recorder, CoordinatorClient]) -> None:
    recorder, client = rest
    recorder.reply = (200, _view("committing", "committed", "b"))
    view = await client.get("g1")

    assert isinstance(view, Transaction)
    assert view.outcome is Outcome.COMMITTED
    assert [branch.name for branch in view.branches] == ["a", "b"]
    assert view.pending == ["b"]
    assert not view.done


async def test_an_answer_that_is_not_a_transaction_is_a_coordinator_error(
    rest: tuple[Recorder, CoordinatorClient],
) -> None:
    recorder, client = rest
    recorder.reply = (200, b'{"state": 7}')
    with pytest.raises(CoordinatorError) as caught:
        await client.get("g1")

    assert caught.value.code == "invalid_response"
    assert "gtid" in caught.value.message


async def test_wait_returns_once_every_branch_acknowledged_phase_two(rest: tuple[Recorder, CoordinatorClient]) -> None:
    recorder, client = rest
    recorder.replies = [(200, _view("committing", "committed", "b")), (200, _view("committing", "committed", "b"))]
    recorder.reply = (200, _view("committed", "committed"))
    view = await client.wait("g1", timeout=10, poll_interval=0.01)

    assert view.done
    assert len(recorder.requests) == 3


async def test_wait_times_out_naming_the_branches_still_pending(rest: tuple[Recorder, CoordinatorClient]) -> None:
    recorder, client = rest
    recorder.reply = (200, _view("committing", "committed", "b"))
    with pytest.raises(TimeoutError, match="waiting for b"):
        await client.wait("g1", timeout=0.05, poll_interval=0.01)


async def test_commit_wait_done_waits_out_a_commit_that_answered_pending(
    rest: tuple[Recorder, CoordinatorClient],
) -> None:
    recorder, client = rest
    recorder.replies = [(200, _view("committing", "committed", "b"))]  # the commit's answer
    recorder.reply = (200, _view("committed", "committed"))
    view = await client.commit("g1", wait="done", timeout=10)

    assert view.done
    assert [(r["method"], r["path"]) for r in recorder.requests] == [
        ("POST", "/v1/transactions/g1/commit"),
        ("GET", "/v1/transactions/g1"),
    ]
    assert recorder.requests[0]["query"] == {}  # the coordinator's own wait first


def test_every_public_method_of_the_client_says_what_it_does() -> None:
    undocumented = [
        name
        for name, member in inspect.getmembers(CoordinatorClient)
        if not name.startswith("_") and callable(member) and not inspect.getdoc(member)
    ]
    assert undocumented == []
