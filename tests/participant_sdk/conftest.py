"""Fixtures for the participant SDK tests (see sdk_harness for the harness itself)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from sdk_harness import Harness

from participant_sdk.testing import StubCoordinator
from twopc_core import failpoints


@pytest.fixture
def harness_factory(tmp_path: Path, coordinator: tuple[StubCoordinator, str]) -> Callable[[], Harness]:
    return lambda: Harness(tmp_path, coordinator[1])


@pytest.fixture
async def harness(harness_factory: Callable[[], Harness]) -> AsyncIterator[Harness]:
    h = await harness_factory().start()
    yield h
    await h.stop()


@pytest.fixture(autouse=True)
def no_failpoints() -> Any:
    failpoints.configure(None)
    yield
    failpoints.configure(None)
