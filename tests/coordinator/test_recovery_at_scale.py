"""Recovery at scale: a coordinator that starts on a log holding 10,000 unfinished
transactions (SQLite, or PostgreSQL), or a replica that takes them over from one that
left, is ready with every one of them scheduled in a few seconds, and then finishes them
all.

The figure (seconds from start to ready) is printed and kept as a test property; the
README quotes it. It is measured, not asserted: this machine is shared and noisy.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from adapters.postgres.testing import scratch_database, server_dsn
from coordinator.config import ParticipantSettings, TransactionSettings
from coordinator.engine import Coordinator
from coordinator.log import BranchRecord, DecisionLog, PostgresLog, SQLiteLog, TransactionRecord
from coordinator.transport import Backoff, Transport
from tests.coordinator.conftest import SECRET, StubParticipant
from twopc_core.testing import wait_until

UNFINISHED = 10_000

pytestmark = pytest.mark.slow


def unfinished(n: int) -> TransactionRecord:
    """A third decided (phase 2 resumes), a third undecided with a prepared branch
    (presumed abort), a third one-phase (the participant is asked)."""
    kind = n % 3
    common = {"gtid": f"c1-{n:028x}", "created_at": 1.0, "updated_at": 1.0, "deadline": 2.0}
    if kind == 0:
        return TransactionRecord(
            state="committing", decision="committed", branches=(BranchRecord("p1", "prepared"),), **common
        )
    if kind == 1:
        return TransactionRecord(state="preparing", decision=None, branches=(BranchRecord("p1", "prepared"),), **common)
    return TransactionRecord(
        state="preparing", decision=None, one_phase=True, branches=(BranchRecord("p1", "enlisted"),), **common
    )


@pytest.fixture
async def participant_url() -> AsyncIterator[str]:
    server = TestServer(StubParticipant("p1").app())
    await server.start_server()
    try:
        yield str(server.make_url("/twopc"))
    finally:
        await server.close()


@pytest.fixture
async def pg_dsn() -> AsyncIterator[str]:
    async with scratch_database(server_dsn(), "recovery") as dsn:
        yield dsn


async def fill(log: DecisionLog, node_id: str = "c1") -> None:
    """Write the unfinished transactions as replica ``node_id`` and leave the log."""
    await log.open()
    await log.join(node_id, f"http://{node_id}.test:7070", 3.0)
    await asyncio.gather(*(log.force(unfinished(n)) for n in range(UNFINISHED)))
    await log.leave()
    await log.close()


async def coordinator_on(log: DecisionLog, url: str, node_id: str = "c1") -> Coordinator:
    transport = Transport([ParticipantSettings(name="p1", url=url, secret=SECRET)], Backoff(0.01, 0.05), 5.0)
    await transport.start()
    settings = TransactionSettings(retry_base_ms=10, retry_cap_ms=50)
    return Coordinator(node_id, log, transport, settings, advertise_url=f"http://{node_id}.test:7070", lease=3.0)


async def finish_all(coordinator: Coordinator, log: DecisionLog) -> None:
    """Wait until the log holds nothing unfinished. (On a shared log a replica whose loop
    lags past its lease under this storm is fenced, joins again and adopts the rest: the
    active set may be empty for a moment before all is done.)"""

    async def nothing_unfinished() -> bool:
        await log.sync()
        return coordinator.active_count == 0 and await log.unfinished() == []

    await wait_until(nothing_unfinished, timeout=120, interval=0.2, message="every transaction to finish")


def report(record_property: Callable[[str, object], None], what: str, seconds: float) -> None:
    record_property("seconds_to_ready", round(seconds, 2))
    print(f"\n{UNFINISHED} unfinished transactions {what}, every one scheduled after {seconds:.2f} s")


@pytest.fixture(params=["sqlite", "postgres"])
async def make_log(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Callable[[], DecisionLog]]:
    """Opens logs on one store: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield lambda: SQLiteLog(tmp_path / "log.db")
        return
    async with scratch_database(server_dsn(), "recovery") as dsn:
        yield lambda: PostgresLog(dsn)


async def test_ten_thousand_unfinished_transactions_are_all_scheduled_at_start_and_finish(
    make_log: Callable[[], DecisionLog], participant_url: str, record_property: Callable[[str, object], None]
) -> None:
    await fill(make_log())
    log = make_log()
    await log.open()
    coordinator = await coordinator_on(log, participant_url)
    try:
        started = time.perf_counter()
        await coordinator.start()
        seconds = time.perf_counter() - started
        assert coordinator.ready
        assert coordinator.recovered == UNFINISHED
        report(record_property, f"in a {type(log).__name__} at start", seconds)
        await finish_all(coordinator, log)
    finally:
        await coordinator.close()
        await log.close()


async def test_a_replica_taking_over_ten_thousand_unfinished_transactions_schedules_them_all_and_finishes(
    pg_dsn: str, participant_url: str, record_property: Callable[[str, object], None]
) -> None:
    await fill(PostgresLog(pg_dsn), node_id="c1")  # c1 left: its lease ended at once
    log = PostgresLog(pg_dsn)
    await log.open()
    taker = await coordinator_on(log, participant_url, node_id="c2")
    try:
        started = time.perf_counter()
        await taker.start()
        await wait_until(
            lambda: taker.recovered == UNFINISHED, timeout=60, interval=0.01, message="c2 to take c1's work over"
        )
        seconds = time.perf_counter() - started
        assert taker.ready
        assert taker.membership.takeovers == 1
        report(record_property, "taken over from a replica that left", seconds)
        await finish_all(taker, log)
    finally:
        await taker.close()
        await log.close()
