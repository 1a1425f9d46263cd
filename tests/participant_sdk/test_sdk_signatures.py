"""Every protocol request must carry a fresh signature made for its own operation."""

from __future__ import annotations

import time

import orjson
from sdk_harness import SECRET, branch_body, prepare_body

from participant_sdk.testing import ParticipantTestServer
from twopc_core.signing import signed_headers


async def test_unsigned_request_is_refused_with_401(harness: ParticipantTestServer) -> None:
    response = await harness.http.post("/twopc/prepare", data=orjson.dumps(prepare_body("g1")))
    body = await response.json()

    assert response.status == 401
    assert body["error"]["code"] == "unauthorized"
    assert harness.resource.calls == []


async def test_request_signed_with_another_secret_is_refused(harness: ParticipantTestServer) -> None:
    status, body = await harness.call("prepare", prepare_body("g1"), secret="not-" + SECRET)

    assert status == 401
    assert body["error"]["message"] == "signature does not match"
    assert harness.resource.calls == []


async def test_stale_signature_is_refused(harness: ParticipantTestServer) -> None:
    status, body = await harness.call("prepare", prepare_body("g1"), now=time.time() - 3600)

    assert status == 401
    assert "stale" in body["error"]["message"]
    assert harness.resource.calls == []


async def test_signature_made_for_another_operation_is_refused(harness: ParticipantTestServer) -> None:
    await harness.prepare("g1")
    data = orjson.dumps(branch_body("g1"))
    # An abort's signature replayed against commit (the bodies are alike).
    headers = signed_headers(SECRET, "abort", data)
    response = await harness.http.post("/twopc/commit", data=data, headers=headers)

    assert response.status == 401
    assert await harness.status("g1") == "prepared"


async def test_batch_signed_as_another_operation_is_refused(harness: ParticipantTestServer) -> None:
    data = orjson.dumps({"ops": [{"op": "prepare", **prepare_body("g1")}]})
    response = await harness.http.post("/twopc/batch", data=data, headers=signed_headers(SECRET, "prepare", data))

    assert response.status == 401
    assert harness.resource.calls == []
