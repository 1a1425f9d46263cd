"""Restarts keep prepared branches, and the in-doubt loop settles them by asking the
coordinator: committed, aborted, unknown (presumed abort) or still undecided; with
several coordinator replicas, through one that answers."""

from __future__ import annotations

import time
from collections.abc import Callable

from sdk_harness import branch_body

from participant_sdk.testing import ParticipantTestServer, StubCoordinator
from twopc_core.testing import FakeClock, wait_until


async def test_restart_keeps_prepared_branches(harness: ParticipantTestServer, stub: StubCoordinator) -> None:
    await harness.prepare("g1", {"k": 1})
    stub.decide("g1", None)
    await harness.restart()

    assert await harness.status("g1") == "prepared"
    assert harness.participant.in_doubt() == [("g1", "p1")]
    assert await harness.prepare("g1", {"k": 1}) == (200, {"vote": "yes", "reason": None})
    assert harness.resource.calls_of("prepare") == [("g1", "p1")]


async def test_in_doubt_branch_commits_when_the_coordinator_decided_commit(
    harness: ParticipantTestServer, stub: StubCoordinator
) -> None:
    await harness.prepare("g1", {"k": 1})
    stub.decide("g1", "committed")
    await harness.restart()

    assert harness.resource.committed == {("g1", "p1"): {"k": 1}}
    assert await harness.status("g1") == "committed"
    assert harness.participant.in_doubt_count == 0


async def test_in_doubt_branch_aborts_when_the_coordinator_decided_abort(
    harness: ParticipantTestServer, stub: StubCoordinator
) -> None:
    await harness.prepare("g1")
    stub.decide("g1", "aborted")
    await harness.restart()

    assert ("g1", "p1") in harness.resource.aborted
    assert await harness.status("g1") == "aborted"


async def test_transaction_unknown_to_the_coordinator_is_presumed_aborted(
    harness: ParticipantTestServer, stub: StubCoordinator
) -> None:
    await harness.prepare("g1")
    result = await harness.participant.resolve_in_doubt()

    assert "g1" in stub.inquiries
    assert result.aborted == 1
    assert ("g1", "p1") in harness.resource.aborted
    assert await harness.status("g1") == "aborted"


async def test_undecided_transaction_waits_until_the_coordinator_decides(
    harness: ParticipantTestServer, stub: StubCoordinator
) -> None:
    await harness.prepare("g1")
    stub.decide("g1", None)
    waiting = await harness.participant.resolve_in_doubt()

    assert waiting.undecided == 1
    assert await harness.status("g1") == "prepared"
    assert harness.resource.calls_of("abort") == []

    stub.decide("g1", "committed")
    await harness.participant.resolve_in_doubt()
    assert await harness.status("g1") == "committed"


async def test_unreachable_coordinator_leaves_the_branch_prepared_for_the_next_round(
    harness: ParticipantTestServer, stub: StubCoordinator
) -> None:
    await harness.prepare("g1")
    stub.unavailable = True
    result = await harness.participant.resolve_in_doubt()

    assert result.unreachable == 1
    assert await harness.status("g1") == "prepared"

    stub.unavailable = False
    stub.decide("g1", "committed")
    await harness.participant.resolve_in_doubt()
    assert await harness.status("g1") == "committed"


async def test_coordinator_not_listening_counts_as_unreachable(
    harness_factory: Callable[..., ParticipantTestServer], unused_tcp_port: int
) -> None:
    h = harness_factory(coordinator_url=f"http://127.0.0.1:{unused_tcp_port}")
    await h.start()
    try:
        await h.prepare("g1")
        result = await h.participant.resolve_in_doubt()
    finally:
        await h.stop()

    assert result.unreachable == 1
    assert result.resolved == 0


async def test_branches_of_one_transaction_share_one_inquiry(
    harness: ParticipantTestServer, stub: StubCoordinator
) -> None:
    for branch in ("a", "b"):
        await harness.call("prepare", {"gtid": "g1", "branch": branch, "deadline": time.time() + 30})
    stub.decide("g1", "committed")
    stub.inquiries.clear()
    result = await harness.participant.resolve_in_doubt()

    assert stub.inquiries == ["g1"]
    assert result.committed == 2


async def test_branch_held_only_by_the_resource_is_asked_about_after_a_restart(
    harness: ParticipantTestServer, stub: StubCoordinator
) -> None:
    # Staged, then a crash before the YES reached the log.
    harness.resource.prepared[("g9", "p1")] = {"k": 9}
    stub.decide("g9", None)
    await harness.restart()

    assert "g9" in stub.inquiries
    assert harness.participant.in_doubt() == [("g9", "p1")]
    stub.decide("g9", "aborted")
    await harness.participant.resolve_in_doubt()
    assert ("g9", "p1") in harness.resource.aborted


async def test_loop_asks_again_every_interval_without_being_told(
    harness_factory: Callable[[], ParticipantTestServer], stub: StubCoordinator
) -> None:
    h = await harness_factory().start(inquiry_interval=0.05)
    try:
        await h.prepare("g1")
        stub.decide("g1", "committed")
        await wait_until(lambda: h.resource.committed, timeout=5, message="loop commits g1")
        assert await h.status("g1") == "committed"
    finally:
        await h.stop()


async def test_branch_is_not_asked_about_before_its_inquiry_interval(
    harness_factory: Callable[[], ParticipantTestServer], stub: StubCoordinator
) -> None:
    clock = FakeClock(time.time())
    h = harness_factory()
    h.clock = clock.now
    await h.start(inquiry_interval=30.0)
    try:
        await h.prepare("g1")
        early = await h.participant.resolve_in_doubt(min_age=30.0)
        clock.advance(31)
        late = await h.participant.resolve_in_doubt(min_age=30.0)
    finally:
        await h.stop()

    assert early.asked == 0
    assert late.asked == 1


async def test_operator_heuristic_outcome_is_recorded_and_reported(harness: ParticipantTestServer) -> None:
    await harness.prepare("g1")
    await harness.participant.force_outcome("g1", "p1", "aborted")
    status = await harness.call("status", branch_body("g1"))
    commit = await harness.call("commit", branch_body("g1"))

    assert status == (200, {"status": "aborted", "heuristic": True})
    assert commit == (200, {"status": "aborted", "reason": "heuristic aborted by operator", "heuristic": True})
    await harness.restart()
    assert (await harness.call("status", branch_body("g1")))[1]["heuristic"] is True


# -- coordinator replicas ------------------------------------------------------------------


async def test_an_in_doubt_branch_is_settled_through_the_next_replica_when_the_first_is_down(
    harness_factory: Callable[..., ParticipantTestServer],
    coordinator: tuple[StubCoordinator, str],
    stopped_coordinator: str,
) -> None:
    stub, url = coordinator
    h = harness_factory([stopped_coordinator, url])
    await h.start()
    try:
        await h.prepare("g1", {"k": 1})
        stub.decide("g1", "committed")
        result = await h.participant.resolve_in_doubt()
        status = await h.status("g1")
    finally:
        await h.stop()

    assert (result.committed, result.unreachable) == (1, 0)
    assert status == "committed"
    assert h.resource.committed == {("g1", "p1"): {"k": 1}}


async def test_a_replica_that_is_not_ready_is_not_an_unreachable_coordinator_while_another_answers(
    harness_factory: Callable[..., ParticipantTestServer], coordinator: tuple[StubCoordinator, str]
) -> None:
    stub, url = coordinator
    not_ready = StubCoordinator()
    not_ready.unavailable = True
    async with not_ready.serve() as not_ready_url:
        h = await harness_factory([not_ready_url, url]).start()
        try:
            await h.prepare("g1")
            await h.prepare("g2")
            stub.decide("g1", "aborted")
            stub.decide("g2", None)
            first = await h.participant.resolve_in_doubt()
            asked_before = list(not_ready.inquiries)
            second = await h.participant.resolve_in_doubt()
        finally:
            await h.stop()

    assert (first.aborted, first.undecided, first.unreachable) == (1, 1, 0)
    assert (second.undecided, second.unreachable) == (1, 0)
    # The first round's inquiries went out at once, each to the replica not ready first;
    # from then on the replica that answered is asked first.
    assert sorted(asked_before) == ["g1", "g2"]
    assert not_ready.inquiries == asked_before


async def test_a_branch_waits_for_the_next_round_when_no_replica_answers(
    harness_factory: Callable[..., ParticipantTestServer],
    coordinator: tuple[StubCoordinator, str],
    stopped_coordinator: str,
) -> None:
    stub, url = coordinator
    stub.unavailable = True
    h = await harness_factory([stopped_coordinator, url]).start()
    try:
        await h.prepare("g1")
        result = await h.participant.resolve_in_doubt()
        status = await h.status("g1")
    finally:
        await h.stop()

    assert result.unreachable == 1
    assert status == "prepared"
    assert stopped_coordinator in result.errors[0] and "503 not_ready" in result.errors[0]
