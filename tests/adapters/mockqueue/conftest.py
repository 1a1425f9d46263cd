"""Fixtures for the mock queue tests: a stub coordinator and the queue service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from mockqueue_harness import QueueService

from participant_sdk.testing import StubCoordinator


@pytest.fixture
async def queue(tmp_path: Path, coordinator: tuple[StubCoordinator, str]) -> AsyncIterator[QueueService]:
    service = await QueueService(tmp_path / "queue-a", coordinator[1]).start()
    yield service
    await service.stop()
