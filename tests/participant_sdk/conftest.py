"""Fixtures for the participant SDK tests (see sdk_harness for the participant they serve)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from sdk_harness import participant_server

from participant_sdk.testing import ParticipantTestServer, StubCoordinator
from twopc_core import failpoints


@pytest.fixture
def harness_factory(tmp_path: Path, coordinator: tuple[StubCoordinator, str]) -> Callable[..., ParticipantTestServer]:
    """A participant server not yet started, on the stub coordinator unless given other
    URLs (several for coordinator replicas)."""

    def make(coordinator_url: str | Sequence[str] = coordinator[1]) -> ParticipantTestServer:
        return participant_server(tmp_path, coordinator_url)

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
