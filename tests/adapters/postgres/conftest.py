"""Fixtures for the PostgreSQL adapter tests: a scratch database on the real test server
per test (see adapters.postgres.testing), a stub coordinator, the participant service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pg_harness import PgService, create_items

from adapters.postgres.testing import scratch_database, server_dsn
from participant_sdk.testing import StubCoordinator
from twopc_core import failpoints


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The test server's DSN; fails (never skips) with how to start one if there is none."""
    return server_dsn()


@pytest.fixture
async def database(pg_server: str) -> AsyncIterator[str]:
    async with scratch_database(pg_server, "pg") as dsn:
        await create_items(dsn)
        yield dsn


@pytest.fixture
async def other_database(pg_server: str) -> AsyncIterator[str]:
    async with scratch_database(pg_server, "other") as dsn:
        await create_items(dsn)
        yield dsn


@pytest.fixture
async def service(tmp_path: Path, database: str, coordinator: tuple[StubCoordinator, str]) -> AsyncIterator[PgService]:
    svc = await PgService(tmp_path, database, coordinator[1]).start()
    yield svc
    await svc.stop()


@pytest.fixture(autouse=True)
def no_failpoints() -> None:
    failpoints.configure(None)
