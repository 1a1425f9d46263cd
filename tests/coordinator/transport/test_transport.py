"""The transport: signed calls, coalesced into batches under load, failures as no votes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestServer

from coordinator.config import ParticipantSettings
from coordinator.transport import Backoff, CallFailed, Transport
from tests.coordinator.conftest import SECRET, StubParticipant
from twopc_core.protocol import BranchStatus, Outcome, Vote
from twopc_core.testing import wait_until


@pytest.fixture
async def stub() -> AsyncIterator[StubParticipant]:
    participant = StubParticipant("p1")
    server = TestServer(participant.app())
    await server.start_server()
    participant.url = str(server.make_url("/twopc"))
    try:
        yield participant
    finally:
        await server.close()


async def make_transport(stub: StubParticipant, max_inflight: int) -> Transport:
    settings = ParticipantSettings(
        name="p1",
        url=stub.url,
        secret=SECRET,
        max_inflight_exchanges=max_inflight,
    )
    transport = Transport([settings], Backoff(0.01, 0.05), phase_two_timeout=1.0)
    await transport.start()
    return transport


async def test_a_lone_call_goes_as_its_own_operation(stub: StubParticipant) -> None:
    transport = await make_transport(stub, max_inflight=4)
    try:
        vote, _ = await transport.prepare("p1", "g1", {"x": 1}, deadline=4e9, timeout=1)
        assert vote is Vote.YES
        assert stub.batches == []
        assert stub.ops("prepare")[0]["payload"] == {"x": 1}
    finally:
        await transport.close()


async def test_calls_queued_behind_a_busy_exchange_go_as_one_batch(stub: StubParticipant) -> None:
    stub.no_for = {"g7"}
    transport = await make_transport(stub, max_inflight=1)
    try:
        votes = await asyncio.gather(
            *(transport.prepare("p1", f"g{i}", None, deadline=4e9, timeout=5) for i in range(20))
        )
        assert [v for v, _ in votes] == [Vote.NO if i == 7 else Vote.YES for i in range(20)]
        assert stub.batches and max(stub.batches) > 1
        stats = transport.exchange_stats()
        assert stats["participant_calls"] == 20
        assert stats["participant_exchanges"] < 20
    finally:
        await transport.close()


async def test_calls_made_in_one_turn_of_the_loop_share_an_exchange(stub: StubParticipant) -> None:
    # Free exchange slots to spare: only waiting for the end of the turn coalesces them.
    transport = await make_transport(stub, max_inflight=8)
    try:
        calls = [asyncio.ensure_future(transport.prepare("p1", f"g{i}", None, 4e9, timeout=5)) for i in range(5)]
        votes = await asyncio.gather(*calls)
        assert [v for v, _ in votes] == [Vote.YES] * 5
        assert stub.batches == [5]
        assert transport.exchange_stats()["participant_exchanges"] == 1
    finally:
        await transport.close()


async def test_a_participant_answering_a_batch_all_at_once_is_understood(stub: StubParticipant) -> None:
    stub.stream = False
    transport = await make_transport(stub, max_inflight=1)
    try:
        votes = await asyncio.gather(*(transport.prepare("p1", f"g{i}", None, 4e9, timeout=5) for i in range(10)))
        assert {v for v, _ in votes} == {Vote.YES}
        assert max(stub.batches) > 1
    finally:
        await transport.close()


async def test_a_prepare_that_waits_does_not_hold_back_the_others_in_its_batch(stub: StubParticipant) -> None:
    # The votes that arrive may be what lets the coordinator release the waiting one's lock.
    stub.gates["gate"] = asyncio.Event()
    stub.hang_for = {"g0"}
    transport = await make_transport(stub, max_inflight=1)
    try:
        gate = asyncio.create_task(transport.prepare("p1", "gate", None, 4e9, timeout=30))
        await wait_until(lambda: len(stub.ops("prepare")) == 1, timeout=5, message="the gate in flight")
        # Queued behind the gate, these go together as one batch once it opens.
        batched = [asyncio.create_task(transport.prepare("p1", f"g{i}", None, 4e9, timeout=30)) for i in range(6)]
        stub.gates["gate"].set()
        votes = await asyncio.wait_for(asyncio.gather(gate, *batched[1:]), 5)
        assert {v for v, _ in votes} == {Vote.YES}
        assert stub.batches == [6]
        assert not batched[0].done()
        batched[0].cancel()
    finally:
        await transport.close()


async def test_an_error_in_one_batch_slot_fails_only_that_call(stub: StubParticipant) -> None:
    stub.error_for = {"g3"}
    transport = await make_transport(stub, max_inflight=1)
    try:
        results = await asyncio.gather(*(transport.status("p1", f"g{i}") for i in range(6)), return_exceptions=True)
        assert isinstance(results[3], CallFailed) and "boom" in str(results[3])
        assert [r for i, r in enumerate(results) if i != 3] == [BranchStatus.UNKNOWN] * 5
        assert max(stub.batches) > 1
    finally:
        await transport.close()


async def test_phase_two_is_retried_until_acknowledged(stub: StubParticipant) -> None:
    stub.error_for = {"g1"}
    transport = await make_transport(stub, max_inflight=4)
    try:
        delivery = asyncio.create_task(transport.deliver("p1", "g1", Outcome.COMMITTED))
        await wait_until(lambda: len(stub.ops("commit")) >= 3, timeout=5, message="three refused commits")
        stub.error_for = set()
        assert (await asyncio.wait_for(delivery, 5)).status is Outcome.COMMITTED
        assert "g1" in stub.committed
    finally:
        await transport.close()


async def test_garbage_in_answer_to_a_batch_is_a_no_vote_for_every_call_in_it(stub: StubParticipant) -> None:
    stub.mode = "garbage"
    transport = await make_transport(stub, max_inflight=1)
    try:
        votes = await asyncio.gather(*(transport.prepare("p1", f"g{i}", None, 4e9, timeout=2) for i in range(6)))
        assert {v for v, _ in votes} == {Vote.NO}
        assert all("not the protocol" in (reason or "") for _, reason in votes)
    finally:
        await transport.close()


async def test_each_call_keeps_its_own_deadline(stub: StubParticipant) -> None:
    stub.mode = "hang"
    transport = await make_transport(stub, max_inflight=4)
    try:
        vote, reason = await transport.prepare("p1", "g1", None, deadline=4e9, timeout=0.2)
        assert vote is Vote.NO and "no answer within" in (reason or "")
    finally:
        await transport.close()


async def test_a_shorter_deadline_made_later_still_expires_first(stub: StubParticipant) -> None:
    stub.mode = "hang"
    transport = await make_transport(stub, max_inflight=4)
    try:
        patient = asyncio.create_task(transport.prepare("p1", "g1", None, deadline=4e9, timeout=30))
        await asyncio.sleep(0)
        vote, reason = await asyncio.wait_for(transport.prepare("p1", "g2", None, deadline=4e9, timeout=0.2), 5)
        assert vote is Vote.NO and "no answer within 0.2s" in (reason or "")
        assert not patient.done()
        patient.cancel()
    finally:
        await transport.close()


async def test_an_unreachable_participant_is_a_no_vote() -> None:
    settings = ParticipantSettings(name="p1", url="http://127.0.0.1:9/twopc", secret=SECRET)
    transport = Transport([settings], Backoff(0.01, 0.05), phase_two_timeout=1.0)
    await transport.start()
    try:
        vote, reason = await transport.prepare("p1", "g1", None, deadline=4e9, timeout=1)
        assert vote is Vote.NO and "unreachable" in (reason or "")
    finally:
        await transport.close()


def test_backoff_is_jittered_under_an_exponential_cap() -> None:
    backoff = Backoff(base=0.1, cap=1.0)
    delays = [backoff.delay(attempt) for attempt in range(10) for _ in range(50)]
    assert all(0 <= d <= 1.0 for d in delays)
    assert max(backoff.delay(0) for _ in range(200)) <= 0.1
    assert len({round(d, 6) for d in delays}) > 100  # jittered, not a fixed schedule


async def test_phase_two_is_not_held_up_behind_prepares_that_wait(stub: StubParticipant) -> None:
    # A prepare waiting on a lock that only another transaction's COMMIT releases must
    # not keep that COMMIT queued behind it.
    stub.mode = "hang_prepare"
    transport = await make_transport(stub, max_inflight=1)
    try:
        waiting = [asyncio.create_task(transport.prepare("p1", f"w{i}", None, 4e9, timeout=30)) for i in range(3)]
        await wait_until(lambda: len(stub.ops("prepare")) >= 1, timeout=5, message="a prepare in flight")
        assert (await asyncio.wait_for(transport.deliver("p1", "g1", Outcome.COMMITTED), 5)).status is Outcome.COMMITTED
        assert not any(task.done() for task in waiting)
        for task in waiting:
            task.cancel()
    finally:
        await transport.close()
