"""Recovery at scale: a coordinator that starts on a log holding 10,000 unfinished
transactions is ready, with every one of them scheduled, in a few seconds, and then
finishes them all.

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

from coordinator.config import ParticipantSettings, TransactionSettings
from coordinator.engine import Coordinator
from coordinator.log import BranchRecord, DecisionLog, SQLiteLog, TransactionRecord
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


async def measure_recovery(make_log: Callable[[], DecisionLog], url: str) -> tuple[float, Coordinator, DecisionLog]:
    log = make_log()
    await log.open()
    await asyncio.gather(*(log.force(unfinished(n)) for n in range(UNFINISHED)))
    await log.close()
    log = make_log()
    await log.open()
    transport = Transport([ParticipantSettings(name="p1", url=url, secret=SECRET)], Backoff(0.01, 0.05), 5.0)
    await transport.start()
    coordinator = Coordinator("c1", log, transport, TransactionSettings(retry_base_ms=10, retry_cap_ms=50))
    started = time.perf_counter()
    await coordinator.start()
    seconds = time.perf_counter() - started
    return seconds, coordinator, log


async def test_ten_thousand_unfinished_transactions_are_all_scheduled_at_start_and_finish(
    tmp_path: Path, participant_url: str, record_property: Callable[[str, object], None]
) -> None:
    seconds, coordinator, log = await measure_recovery(lambda: SQLiteLog(tmp_path / "log.db"), participant_url)
    try:
        assert coordinator.ready
        assert coordinator.recovered == UNFINISHED
        record_property("seconds_to_ready", round(seconds, 2))
        print(f"\n{UNFINISHED} unfinished transactions scheduled, ready after {seconds:.2f} s")
        await wait_until(lambda: coordinator.active_count == 0, timeout=120, message="every transaction to finish")
        await log.sync()
        assert await log.unfinished() == []
    finally:
        await coordinator.close()
        await log.close()
