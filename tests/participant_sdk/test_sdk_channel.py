"""The participant channel: a signed WebSocket whose frames are answered as the HTTP
calls they stand for, refused to an unsigned, wrongly signed or replayed peer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest
from sdk_harness import SECRET, branch_body, participant_server, prepare_body

from participant_sdk.testing import ParticipantTestServer, StubCoordinator
from twopc_core.channel import SUBPROTOCOL, Answer, decode_answer, encode_request, handshake_headers
from twopc_core.signing import NONCE_HEADER, SIGNATURE_HEADER


@pytest.fixture
async def served(tmp_path: Path, coordinator: tuple[StubCoordinator, str]) -> AsyncIterator[ParticipantTestServer]:
    server = await participant_server(tmp_path, coordinator[1], mount="aiohttp").start()
    yield server
    await server.stop()


async def open_channel(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str]
) -> aiohttp.ClientWebSocketResponse:
    return await session.ws_connect(f"{url}/channel", headers=headers, protocols=(SUBPROTOCOL,))


async def next_answer(ws: aiohttp.ClientWebSocketResponse) -> Answer:
    message = await ws.receive(timeout=10)
    assert message.type is aiohttp.WSMsgType.BINARY, message
    return decode_answer(message.data)


async def test_a_frame_is_answered_as_its_http_call_would_be(served: ParticipantTestServer) -> None:
    nonce, headers = handshake_headers(SECRET)
    async with aiohttp.ClientSession() as session, await open_channel(session, served.url, headers) as ws:
        assert ws.protocol == SUBPROTOCOL
        await ws.send_bytes(encode_request(SECRET, nonce, 0, "prepare", orjson.dumps(prepare_body("g1", {"k": 1}))))
        answer = await next_answer(ws)

    assert (answer.frame_id, answer.status, answer.end) == (0, 200, True)
    assert orjson.loads(answer.body) == {"vote": "yes", "reason": None}
    assert served.resource.calls_of("prepare") == [("g1", "p1")]


async def test_a_batch_frame_is_answered_op_by_op_as_ndjson(served: ParticipantTestServer) -> None:
    nonce, headers = handshake_headers(SECRET)
    ops = {"ops": [{"op": "prepare", **prepare_body("g1")}, {"op": "status", **branch_body("g2")}]}
    async with aiohttp.ClientSession() as session, await open_channel(session, served.url, headers) as ws:
        frame = encode_request(SECRET, nonce, 0, "batch", orjson.dumps(ops), accept="application/x-ndjson")
        await ws.send_bytes(frame)
        parts = [await next_answer(ws)]
        while not parts[-1].end:
            parts.append(await next_answer(ws))

    assert all(part.content_type == "application/x-ndjson" and part.status == 200 for part in parts)
    lines = [orjson.loads(line) for part in parts for line in part.body.splitlines() if line]
    assert sorted(line["index"] for line in lines) == [0, 1]


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda h: h.pop(SIGNATURE_HEADER), id="unsigned"),
        pytest.param(lambda h: h.update({SIGNATURE_HEADER: "0" * 64}), id="wrongly-signed"),
        pytest.param(lambda h: h.update({NONCE_HEADER: "another-nonce"}), id="nonce-not-signed"),
    ],
)
async def test_a_handshake_not_signed_by_the_coordinator_is_refused_401(
    served: ParticipantTestServer, tamper: object
) -> None:
    _, headers = handshake_headers(SECRET)
    tamper(headers)  # type: ignore[operator]
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await open_channel(session, served.url, headers)

    assert refused.value.status == 401


async def test_a_handshake_with_another_secret_is_refused_401(served: ParticipantTestServer) -> None:
    _, headers = handshake_headers("not-the-secret")
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await open_channel(session, served.url, headers)

    assert refused.value.status == 401


async def test_a_replayed_handshake_is_refused_401(served: ParticipantTestServer) -> None:
    _, headers = handshake_headers(SECRET)
    async with aiohttp.ClientSession() as session:
        async with await open_channel(session, served.url, headers):
            pass
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await open_channel(session, served.url, headers)

    assert refused.value.status == 401


async def test_a_frame_signed_for_another_channel_is_answered_401_and_not_run(served: ParticipantTestServer) -> None:
    _, headers = handshake_headers(SECRET)
    other_nonce, _ = handshake_headers(SECRET)
    async with aiohttp.ClientSession() as session, await open_channel(session, served.url, headers) as ws:
        await ws.send_bytes(encode_request(SECRET, other_nonce, 0, "prepare", orjson.dumps(prepare_body("g1"))))
        answer = await next_answer(ws)

    assert answer.status == 401
    assert orjson.loads(answer.body)["error"]["code"] == "unauthorized"
    assert served.resource.calls == []


async def test_a_frame_signed_as_another_operation_is_answered_401_and_not_run(served: ParticipantTestServer) -> None:
    nonce, headers = handshake_headers(SECRET)
    body = orjson.dumps(branch_body("g1"))
    async with aiohttp.ClientSession() as session, await open_channel(session, served.url, headers) as ws:
        abort = encode_request(SECRET, nonce, 0, "abort", body)
        await ws.send_bytes(abort.replace(b'"op":"abort"', b'"op":"commit"', 1))
        answer = await next_answer(ws)

    assert answer.status == 401
    assert served.resource.calls == []


async def test_a_repeated_frame_id_closes_the_channel(served: ParticipantTestServer) -> None:
    nonce, headers = handshake_headers(SECRET)
    body = orjson.dumps(branch_body("g1"))
    async with aiohttp.ClientSession() as session, await open_channel(session, served.url, headers) as ws:
        await ws.send_bytes(encode_request(SECRET, nonce, 0, "status", body))
        assert (await next_answer(ws)).status == 200
        await ws.send_bytes(encode_request(SECRET, nonce, 0, "status", body))
        closing = await ws.receive(timeout=10)

    assert closing.type is aiohttp.WSMsgType.CLOSE
    assert ws.close_code == 1002


async def test_the_asgi_mount_offers_no_channel_so_a_coordinator_speaks_http(
    tmp_path: Path, coordinator: tuple[StubCoordinator, str]
) -> None:
    server = await participant_server(tmp_path, coordinator[1], mount="asgi").start()
    try:
        _, headers = handshake_headers(SECRET)
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await open_channel(session, server.url, headers)
    finally:
        await server.stop()

    assert refused.value.status == 404
