"""Fixtures for the Kafka adapter tests: the real test broker (see
adapters.kafka.testing), a fresh topic and participant name per test, a stub
coordinator and the events service."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from kafka_harness import EventsService

from adapters.kafka.testing import bootstrap_servers, create_topic, unique_name
from participant_sdk.testing import StubCoordinator
from twopc_core import failpoints


@pytest.fixture(scope="session")
def kafka() -> str:
    """The test broker's bootstrap address; fails (never skips) saying how to start one."""
    return bootstrap_servers()


@pytest.fixture
async def topic(kafka: str) -> str:
    """A new topic with three partitions."""
    return await create_topic(kafka, unique_name("orders"), partitions=3)


@pytest.fixture
async def make_events(
    tmp_path: Path, kafka: str, coordinator: tuple[StubCoordinator, str]
) -> AsyncIterator[Callable[..., Awaitable[EventsService]]]:
    """Start an events service; each gets a participant name (and so a stage topic) of its own."""
    started: list[EventsService] = []

    async def make(name: str | None = None, **options: object) -> EventsService:
        name = name or unique_name("events")
        service = EventsService(tmp_path / name, kafka, coordinator[1], name, **options)
        started.append(service)
        return await service.start()

    yield make
    for service in started:
        await service.stop()


@pytest.fixture
async def events(make_events: Callable[..., Awaitable[EventsService]]) -> EventsService:
    return await make_events(shards=2)


@pytest.fixture(autouse=True)
def no_failpoints() -> None:
    failpoints.configure(None)
