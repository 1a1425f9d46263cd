"""Recovery at start-up: what the coordinator does with each kind of record it finds."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from coordinator.config import ParticipantSettings, TransactionSettings
from coordinator.engine import Coordinator
from coordinator.log import BranchRecord, SQLiteLog, TransactionRecord
from coordinator.transport import Backoff, Transport
from tests.coordinator.conftest import SECRET, StubParticipant
from twopc_core.testing import wait_until


@pytest.fixture
async def stub() -> AsyncIterator[tuple[StubParticipant, str]]:
    participant = StubParticipant("p1")
    server = TestServer(participant.app())
    await server.start_server()
    try:
        yield participant, str(server.make_url("/twopc"))
    finally:
        await server.close()


@asynccontextmanager
async def recover_from(tmp_path: Path, url: str, *records: TransactionRecord) -> AsyncIterator[Coordinator]:
    """A coordinator started on a log that already holds ``records``."""
    log = SQLiteLog(tmp_path / "log.db")
    await log.open()
    for record in records:
        await log.force(record)
    transport = Transport([ParticipantSettings(name="p1", url=url, secret=SECRET)], Backoff(0.01, 0.05), 1.0)
    await transport.start()
    coordinator = Coordinator("c1", log, transport, TransactionSettings(retry_base_ms=10, retry_cap_ms=50))
    await coordinator.start()
    try:
        yield coordinator
    finally:
        await coordinator.close()
        await transport.close()
        await log.close()


def one_phase(gtid: str) -> TransactionRecord:
    return TransactionRecord(
        gtid=gtid,
        state="preparing",
        decision=None,
        created_at=1.0,
        updated_at=1.0,
        deadline=2.0,
        one_phase=True,
        branches=(BranchRecord("p1", "enlisted"),),
    )


async def outcome(coordinator: Coordinator, gtid: str) -> str | None:
    return (await coordinator.get(gtid)).record.decision


async def test_a_one_phase_branch_left_prepared_is_committed(tmp_path: Path, stub: tuple[StubParticipant, str]) -> None:
    participant, url = stub
    participant.prepared_for = {"g1"}
    async with recover_from(tmp_path, url, one_phase("g1")) as coordinator:
        await wait_until(lambda: outcome(coordinator, "g1"), timeout=5, message="a recovered outcome")
        assert await outcome(coordinator, "g1") == "committed"
        assert "g1" in participant.committed and "g1" not in participant.aborted


async def test_a_one_phase_branch_the_participant_never_saw_is_aborted(
    tmp_path: Path, stub: tuple[StubParticipant, str]
) -> None:
    participant, url = stub
    async with recover_from(tmp_path, url, one_phase("g2")) as coordinator:
        await wait_until(lambda: outcome(coordinator, "g2"), timeout=5, message="a recovered outcome")
        assert await outcome(coordinator, "g2") == "aborted"
        assert "g2" in participant.aborted  # fenced: a late one-phase commit now fails


async def test_a_decided_commit_resumes_phase_two(tmp_path: Path, stub: tuple[StubParticipant, str]) -> None:
    participant, url = stub
    decided = TransactionRecord(
        gtid="g3",
        state="committing",
        decision="committed",
        created_at=1.0,
        updated_at=1.0,
        deadline=2.0,
        branches=(BranchRecord("p1", "prepared"),),
    )
    async with recover_from(tmp_path, url, decided) as coordinator:
        await wait_until(lambda: "g3" in participant.committed, timeout=5, message="the resent commit")
        await wait_until(lambda: coordinator.active_count == 0, timeout=5, message="the transaction to finish")
        assert await outcome(coordinator, "g3") == "committed"


async def test_an_undecided_transaction_is_aborted_and_its_prepared_branches_told(
    tmp_path: Path, stub: tuple[StubParticipant, str]
) -> None:
    participant, url = stub
    undecided = TransactionRecord(
        gtid="g4",
        state="preparing",
        decision=None,
        created_at=1.0,
        updated_at=1.0,
        deadline=2.0,
        branches=(BranchRecord("p1", "prepared"),),
    )
    async with recover_from(tmp_path, url, undecided) as coordinator:
        await wait_until(lambda: "g4" in participant.aborted, timeout=5, message="the abort")
        await wait_until(lambda: outcome(coordinator, "g4"), timeout=5, message="the aborted record")
        assert await outcome(coordinator, "g4") == "aborted"
