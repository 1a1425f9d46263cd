"""The protocol app bounds each request body (413 as JSON beyond), whatever the embedding
application would take, whether the body's size is declared or streamed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from sdk_harness import BRANCH, SECRET, prepare_body

from participant_sdk import Participant
from participant_sdk.testing import InMemoryResource, ParticipantTestServer, StubCoordinator
from twopc_core.signing import signed_headers

PARTICIPANT = web.AppKey("participant", Participant)
LIMIT = 4096


@pytest.fixture
async def limited(tmp_path: Path, coordinator: tuple[StubCoordinator, str]) -> AsyncIterator[ParticipantTestServer]:
    def service(**options: Any) -> web.Application:
        participant = Participant(
            name=BRANCH,
            resource=InMemoryResource(),
            secret=SECRET,
            coordinator_url=coordinator[1],
            log_path=tmp_path / "p.db",
            **options,
        )
        # The embedding app takes far more: the protocol's own bound must hold.
        app = web.Application(client_max_size=64 * LIMIT)
        app[PARTICIPANT] = participant
        app.add_subapp("/twopc", participant.app(max_body_bytes=LIMIT))
        return app

    server = await ParticipantTestServer(service, BRANCH, SECRET, participant_key=PARTICIPANT).start()
    yield server
    await server.stop()


def padded(gtid: str, size: int) -> bytes:
    return orjson.dumps(prepare_body(gtid, {"pad": "x" * size}))


async def test_a_body_declared_over_the_limit_is_answered_413_as_json(limited: ParticipantTestServer) -> None:
    status, body = await limited.call("prepare", padded("g1", 2 * LIMIT))
    assert status == 413
    assert body["error"]["code"] == "body_too_large"
    assert limited.participant.in_doubt_count == 0


async def test_a_streamed_body_over_the_limit_is_answered_413_as_json(limited: ParticipantTestServer) -> None:
    data = padded("g1", 2 * LIMIT)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 1024):
            yield data[start : start + 1024]

    headers = {"Content-Type": "application/json", **signed_headers(SECRET, "prepare", data)}
    response = await limited.http.post("/twopc/prepare", data=chunks(), headers=headers)  # chunked: no length
    assert response.status == 413
    assert (await response.json())["error"]["code"] == "body_too_large"


async def test_a_body_within_the_limit_is_taken(limited: ParticipantTestServer) -> None:
    status, body = await limited.call("prepare", padded("g1", LIMIT // 2))
    assert (status, body["vote"]) == (200, "yes")
