"""Fixtures shared across the suite: a stub coordinator for participant-side tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestServer

from participant_sdk.testing import StubCoordinator


@pytest.fixture
async def coordinator() -> AsyncIterator[tuple[StubCoordinator, str]]:
    """A stub coordinator answering inquiries as the test decides, and its URL."""
    stub = StubCoordinator()
    server = TestServer(stub.app())
    await server.start_server()
    yield stub, str(server.make_url("")).rstrip("/")
    await server.close()


@pytest.fixture
def stub(coordinator: tuple[StubCoordinator, str]) -> StubCoordinator:
    return coordinator[0]


@pytest.fixture
async def stopped_coordinator() -> str:
    """The URL of a stub coordinator that was started and stopped: it refuses connections,
    as a coordinator replica that is down does."""
    async with StubCoordinator().serve() as url:
        pass
    return url
