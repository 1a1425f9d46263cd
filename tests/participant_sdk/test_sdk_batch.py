"""A batch carries many protocol operations in one exchange, each answered as if
sent alone, in order."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from pydantic import TypeAdapter
from sdk_harness import SECRET, branch_body, prepare_body

from participant_sdk import NotPrepared
from participant_sdk.testing import ParticipantTestServer
from twopc_core.protocol import BatchOp, PrepareResponse, Vote
from twopc_core.signing import signed_headers

_BATCH_OP: TypeAdapter[BatchOp] = TypeAdapter(BatchOp)


def op(name: str, body: dict) -> dict:
    return {"op": name, **body}


async def test_batch_answers_each_op_in_order(harness: ParticipantTestServer) -> None:
    ops = [
        op("prepare", prepare_body("g1", {"n": 1})),
        op("prepare", prepare_body("g2", {"n": 2})),
        op("commit", branch_body("g1")),
        op("abort", branch_body("g2")),
        op("status", branch_body("g1")),
        op("status", branch_body("g2")),
        op("commit", branch_body("g3", one_phase=True, payload={"n": 3})),
    ]
    status, body = await harness.call("batch", {"ops": ops})

    assert status == 200
    assert body["results"] == [
        {"vote": "yes", "reason": None},
        {"vote": "yes", "reason": None},
        {"status": "committed", "reason": None},
        {"status": "aborted", "reason": None},
        {"status": "committed", "heuristic": False},
        {"status": "aborted", "heuristic": False},
        {"status": "committed", "reason": None},
    ]
    assert harness.resource.committed == {("g1", "p1"): {"n": 1}, ("g3", "p1"): {"n": 3}}


async def test_batch_op_error_fills_only_its_own_slot(harness: ParticipantTestServer) -> None:
    ops = [
        op("commit", branch_body("never-prepared")),
        {"op": "explode", "gtid": "g1", "branch": "p1"},
        op("prepare", prepare_body("g2")),
    ]
    status, body = await harness.call("batch", {"ops": ops})

    assert status == 200
    first, second, third = body["results"]
    assert first["error"]["code"] == "not_prepared"
    assert second["error"]["code"] == "invalid_request"
    assert third == {"vote": "yes", "reason": None}


async def test_batch_answers_a_repeated_op_as_the_first(harness: ParticipantTestServer) -> None:
    ops = [op("prepare", prepare_body("g1")), op("prepare", prepare_body("g1"))]
    status, body = await harness.call("batch", {"ops": ops})

    assert status == 200
    assert body["results"] == [{"vote": "yes", "reason": None}] * 2
    assert harness.resource.calls_of("prepare") == [("g1", "p1")]


async def test_batch_body_must_be_an_ops_list(harness: ParticipantTestServer) -> None:
    status, body = await harness.call("batch", {"operations": []})

    assert status == 400
    assert body["error"]["code"] == "invalid_request"


async def test_batch_with_malformed_json_is_a_400(harness: ParticipantTestServer) -> None:
    status, body = await harness.call("batch", b"[[[")

    assert status == 400
    assert body["error"]["code"] == "invalid_json"


async def test_a_batch_asked_for_as_ndjson_answers_each_op_as_it_is_done(harness: ParticipantTestServer) -> None:
    ops = [op("prepare", prepare_body(f"g{i}", {"n": i})) for i in range(3)]
    status, raw = await harness.call("batch", {"ops": ops}, headers={"Accept": "application/x-ndjson"})

    assert status == 200
    lines = [orjson.loads(line) for line in raw.splitlines() if line.strip()]
    assert sorted(line["index"] for line in lines) == [0, 1, 2]
    assert all(line["result"] == {"vote": "yes", "reason": None} for line in lines)


async def _post_batch(harness: ParticipantTestServer, ops: list[dict]) -> Any:
    data = orjson.dumps({"ops": ops})
    headers = {"Accept": "application/x-ndjson", **signed_headers(SECRET, "batch", data)}
    return harness.http.post("/twopc/batch", data=data, headers=headers)


async def test_a_batch_answered_in_one_burst_goes_out_as_one_plain_response(harness: ParticipantTestServer) -> None:
    ops = [op("prepare", prepare_body(f"g{i}", {"n": i})) for i in range(3)]

    async with await _post_batch(harness, ops) as response:
        raw = await response.read()

    assert response.content_type == "application/x-ndjson"
    assert response.headers.get("Transfer-Encoding") is None
    assert response.content_length == len(raw)
    assert sorted(orjson.loads(line)["index"] for line in raw.splitlines()) == [0, 1, 2]


async def test_a_slow_op_does_not_hold_back_the_answers_of_the_others(harness: ParticipantTestServer) -> None:
    harness.resource.gate = asyncio.Event()  # prepares wait; a status does not
    ops = [op("prepare", prepare_body("slow")), op("status", branch_body("other"))]

    async with await _post_batch(harness, ops) as response:
        first = orjson.loads(await asyncio.wait_for(response.content.readline(), timeout=5))
        harness.resource.gate.set()
        second = orjson.loads(await asyncio.wait_for(response.content.readline(), timeout=5))
        rest = await response.read()

    assert response.headers.get("Transfer-Encoding") == "chunked"
    assert first == {"index": 1, "result": {"status": "unknown", "heuristic": False}}
    assert second == {"index": 0, "result": {"vote": "yes", "reason": None}}
    assert rest == b""


async def test_an_op_that_fails_unexpectedly_is_an_internal_error_in_its_own_slot(
    harness: ParticipantTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_lookup = harness.participant.log.lookup

    async def lookup(gtid: str, branch: str, deadline: float | None = None) -> Any:
        if gtid == "broken":
            raise RuntimeError("disk gone")
        return await real_lookup(gtid, branch, deadline)

    monkeypatch.setattr(harness.participant.log, "lookup", lookup)
    ops = [op("status", branch_body("broken")), op("prepare", prepare_body("g2"))]
    status, body = await harness.call("batch", {"ops": ops})

    assert status == 200
    broken, fine = body["results"]
    assert broken["error"]["code"] == "internal"
    assert fine == {"vote": "yes", "reason": None}


async def test_an_empty_batch_asked_for_as_ndjson_is_answered_at_once(harness: ParticipantTestServer) -> None:
    status, raw = await asyncio.wait_for(
        harness.call("batch", {"ops": []}, headers={"Accept": "application/x-ndjson"}), timeout=5
    )

    assert (status, raw) == (200, b"")


async def test_the_participant_answers_parsed_ops_without_http(harness: ParticipantTestServer) -> None:
    ops = [
        _BATCH_OP.validate_python(op("prepare", prepare_body("g1"))),
        _BATCH_OP.validate_python(op("commit", branch_body("never-prepared"))),
    ]

    answered, refused = await harness.participant.batch(ops)

    assert answered == PrepareResponse(vote=Vote.YES)
    assert isinstance(refused, NotPrepared)
