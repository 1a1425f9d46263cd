"""Fixtures for the participant SDK tests (see sdk_harness for the participant they serve)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import pytest
from sdk_harness import participant_server

from participant_sdk.testing import ParticipantTestServer, StubCoordinator
from twopc_core import failpoints


@pytest.fixture(params=["aiohttp", "asgi"])
def mount(request: pytest.FixtureRequest) -> str:
    """Each protocol test runs on both mounts: the aiohttp sub-app and the ASGI app."""
    return str(request.param)


@pytest.fixture
def harness_factory(
    tmp_path: Path, coordinator: tuple[StubCoordinator, str], mount: Literal["aiohttp", "asgi"]
) -> Callable[..., ParticipantTestServer]:
    """A participant server not yet started, on the stub coordinator unless given other
    URLs (several for coordinator replicas), on each mount in turn."""

    def make(coordinator_url: str | Sequence[str] = coordinator[1]) -> ParticipantTestServer:
        return participant_server(tmp_path, coordinator_url, mount=mount)

    return make


@pytest.fixture
async def harness(harness_factory: Callable[..., ParticipantTestServer]) -> AsyncIterator[ParticipantTestServer]:
    h = await harness_factory().start()
    yield h
    await h.stop()


@pytest.fixture(autouse=True)
def no_failpoints() -> Any:
    failpoints.configure(None)
    yield
    failpoints.configure(None)
