"""Fixtures for the decision-log tests: records, a scratch PostgreSQL database per test on
the real test server (never skipped: without a server the tests fail saying how to get
one), and each store opened the way a coordinator opens it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from adapters.postgres.testing import scratch_database, server_dsn
from coordinator.log import BranchRecord, DecisionLog, PostgresLog, SQLiteLog, TransactionRecord
from twopc_core import failpoints

#: Leases in these tests: long enough that nothing runs out unless a test waits for it.
LEASE = 30.0


def record(
    gtid: str,
    state: str = "active",
    decision: str | None = None,
    finished: bool = False,
    *,
    created_at: float = 100.0,
    updated_at: float = 100.0,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
    metadata: dict[str, object] | None = None,
) -> TransactionRecord:
    return TransactionRecord(
        gtid=gtid,
        state=state,
        decision=decision,
        created_at=created_at,
        updated_at=updated_at,
        deadline=130.0,
        finished=finished,
        branches=(BranchRecord("a", "prepared"), BranchRecord("b", "read_only", early=True, reason="r")),
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        metadata=metadata or {},
    )


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The test server's DSN; fails (never skips) with how to start one if there is none."""
    return server_dsn()


@pytest.fixture
async def pg_dsn(pg_server: str) -> AsyncIterator[str]:
    """A new, empty database for this test."""
    async with scratch_database(pg_server, "log") as dsn:
        yield dsn


@pytest.fixture(autouse=True)
def no_failpoints() -> Iterator[None]:
    failpoints.configure(None)
    yield
    failpoints.configure(None)


class Logs:
    """Opens logs of one store (one SQLite file, or one PostgreSQL database) and closes
    whatever a test left open."""

    def __init__(self, make: Callable[[], DecisionLog]) -> None:
        self._make = make
        self._open: list[DecisionLog] = []

    async def open(self, node_id: str = "c1", lease: float = LEASE) -> DecisionLog:
        """A log opened and joined as a coordinator replica does."""
        log = self._make()
        await log.open()
        self._open.append(log)
        await log.join(node_id, f"http://{node_id}.test:7070", lease)
        return log

    async def close(self, log: DecisionLog) -> None:
        """Close ``log`` as a coordinator shuts down: end the lease, then flush."""
        if log in self._open:
            self._open.remove(log)
            await log.leave()
            await log.close()

    async def close_all(self) -> None:
        for log in list(self._open):
            await self.close(log)


@pytest.fixture
async def pg_logs(pg_dsn: str) -> AsyncIterator[Logs]:
    """PostgreSQL logs on this test's database."""
    logs = Logs(lambda: PostgresLog(pg_dsn, pool_size=3, timeout=2.0))
    yield logs
    await logs.close_all()


@pytest.fixture(params=["sqlite", "postgres"])
async def logs(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Logs]:
    """Logs of each store in turn, for what every store must do alike."""
    if request.param == "sqlite":
        made = Logs(lambda: SQLiteLog(tmp_path / "log.db"))
        yield made
        await made.close_all()
        return
    async with scratch_database(request.getfixturevalue("pg_server"), "log") as dsn:
        made = Logs(lambda: PostgresLog(dsn, pool_size=3, timeout=2.0))
        yield made
        await made.close_all()
