"""The protocol mounted in a FastAPI service (the ASGI mount), called in process: the
same answers and errors as on aiohttp, which the protocol tests check on both mounts;
here what is the ASGI mount's own (its mounting, its lifespan, its HTTP edges)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest
from fastapi import FastAPI
from sdk_harness import SECRET, prepare_body

from participant_sdk import Participant
from participant_sdk.testing import InMemoryResource, StubCoordinator
from twopc_core.signing import signed_headers

LIMIT = 4096


def inventory_service(participant: Participant) -> FastAPI:
    """A FastAPI service of its own with the protocol mounted under /twopc."""
    app = FastAPI(lifespan=participant.lifespan)

    @app.get("/healthz")
    async def healthz() -> dict[str, object]:
        return {"status": "ok", "in_doubt": participant.in_doubt_count}

    app.mount("/twopc", participant.asgi(max_body_bytes=LIMIT))
    return app


@pytest.fixture
async def service(
    tmp_path: Path, coordinator: tuple[StubCoordinator, str]
) -> AsyncIterator[tuple[Participant, httpx.AsyncClient]]:
    participant = Participant(
        name="p1",
        resource=InMemoryResource(),
        secret=SECRET,
        coordinator_url=coordinator[1],
        log_path=tmp_path / "p.db",
        inquiry_interval=60.0,
    )
    app = inventory_service(participant)
    # httpx's in-process transport sends no lifespan events: the lifespan by hand, as a server would.
    async with (
        participant.lifespan(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://inventory.test") as client,
    ):
        yield participant, client


def signed(operation: str, body: object) -> tuple[bytes, dict[str, str]]:
    data = orjson.dumps(body)
    return data, {"Content-Type": "application/json", **signed_headers(SECRET, operation, data)}


async def test_a_prepare_through_the_fastapi_mount_is_voted_and_logged(
    service: tuple[Participant, httpx.AsyncClient],
) -> None:
    participant, client = service
    data, headers = signed("prepare", prepare_body("g1", {"sku": "apple", "qty": 1}))
    response = await client.post("/twopc/prepare", content=data, headers=headers)

    assert (response.status_code, response.json()) == (200, {"vote": "yes", "reason": None})
    assert response.headers["content-type"] == "application/json"
    assert participant.in_doubt() == [("g1", "p1")]
    assert (await client.get("/healthz")).json() == {"status": "ok", "in_doubt": 1}


async def test_an_unknown_operation_under_the_mount_is_a_json_404(
    service: tuple[Participant, httpx.AsyncClient],
) -> None:
    _, client = service
    data, headers = signed("frobnicate", {})
    response = await client.post("/twopc/frobnicate", content=data, headers=headers)

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


async def test_a_get_of_an_operation_is_a_json_405(service: tuple[Participant, httpx.AsyncClient]) -> None:
    _, client = service
    response = await client.get("/twopc/prepare")

    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


async def test_a_body_over_the_mounts_limit_is_a_json_413_before_the_signature_is_checked(
    service: tuple[Participant, httpx.AsyncClient],
) -> None:
    participant, client = service
    data, headers = signed("prepare", prepare_body("g1", {"pad": "x" * 2 * LIMIT}))
    response = await client.post("/twopc/prepare", content=data, headers=headers)

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"
    assert participant.in_doubt_count == 0


async def test_a_streamed_body_over_the_limit_is_a_json_413(service: tuple[Participant, httpx.AsyncClient]) -> None:
    participant, client = service
    data, headers = signed("prepare", prepare_body("g1", {"pad": "x" * 2 * LIMIT}))

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 1024):
            yield data[start : start + 1024]

    response = await client.post("/twopc/prepare", content=chunks(), headers=headers)  # chunked: no length

    assert response.status_code == 413
    assert participant.in_doubt_count == 0


async def test_the_asgi_app_served_alone_starts_and_stops_the_participant_with_its_lifespan(
    tmp_path: Path, coordinator: tuple[StubCoordinator, str]
) -> None:
    resource = InMemoryResource()
    participant = Participant(
        name="p1", resource=resource, secret=SECRET, coordinator_url=coordinator[1], log_path=tmp_path / "p.db"
    )
    app = participant.asgi(manage_lifecycle=True)
    sent: list[dict[str, object]] = []
    events = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    seen_started: list[bool] = []

    async def receive() -> dict[str, object]:
        seen_started.append(resource.started and not resource.closed)
        return next(events)

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    await app({"type": "lifespan"}, receive, send)  # type: ignore[arg-type]

    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert seen_started == [False, True]  # started between the two events
    assert resource.closed
