"""Early prepare through the participant: the branch's work done in
``participant.branch(gtid)``, prepared and logged on exit, and enlisted with the first
coordinator replica that answers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Literal

import pytest
from sdk_harness import participant_server
from structlog.testing import capture_logs

from participant_sdk import CoordinatorUnreachable, EnlistFailed
from participant_sdk.testing import InMemoryResource, ParticipantTestServer, StubCoordinator

ENLISTED = {"g1": [{"name": "p1", "prepared": True}]}


class BranchingResource(InMemoryResource):
    """An in-memory resource with early prepare: the branch's work goes in a list."""

    @contextlib.asynccontextmanager
    async def branch(self, gtid: str, branch: str) -> AsyncIterator[list[Any]]:
        work: list[Any] = []
        yield work  # an exception inside drops the work: nothing is held prepared
        self.prepared[(gtid, branch)] = work


@pytest.fixture
def on_replicas(tmp_path: Path, mount: Literal["aiohttp", "asgi"]) -> Callable[[list[str]], ParticipantTestServer]:
    """A participant not yet started, on these coordinator URLs, with early prepare, on
    each mount in turn."""

    def make(urls: list[str]) -> ParticipantTestServer:
        return participant_server(tmp_path, urls, BranchingResource(), mount=mount)

    return make


@pytest.fixture
async def harness(
    on_replicas: Callable[[list[str]], ParticipantTestServer], coordinator: tuple[StubCoordinator, str]
) -> AsyncIterator[ParticipantTestServer]:
    h = await on_replicas([coordinator[1]]).start()
    yield h
    await h.stop()


@pytest.fixture
async def not_ready() -> AsyncIterator[tuple[StubCoordinator, str]]:
    """A coordinator replica that answers 503 to everything."""
    stub = StubCoordinator()
    stub.unavailable = True
    async with stub.serve() as url:
        yield stub, url


async def early_branch(server: ParticipantTestServer, gtid: str, work: str) -> None:
    async with server.participant.branch(gtid) as handle:
        handle.append(work)


def prepared_work(server: ParticipantTestServer) -> dict[tuple[str, str], object]:
    resource = server.resource
    assert isinstance(resource, InMemoryResource)
    return dict(resource.prepared)


async def test_a_clean_exit_prepares_the_work_and_enlists_it_as_voted_yes(
    harness: ParticipantTestServer, stub: StubCoordinator
) -> None:
    await early_branch(harness, "g1", "w")

    assert stub.enlisted == ENLISTED
    assert await harness.status("g1") == "prepared"
    assert prepared_work(harness) == {("g1", "p1"): ["w"]}


async def test_an_exception_inside_drops_the_work_and_enlists_nothing(
    harness: ParticipantTestServer, stub: StubCoordinator
) -> None:
    with pytest.raises(ZeroDivisionError):
        async with harness.participant.branch("g1") as handle:
            handle.append("w")
            _ = 1 / 0

    assert stub.enlisted == {}
    assert prepared_work(harness) == {}
    assert await harness.status("g1") == "unknown"


async def test_an_early_branch_enlists_with_the_next_replica_when_the_first_is_down(
    on_replicas: Callable[[list[str]], ParticipantTestServer],
    coordinator: tuple[StubCoordinator, str],
    stopped_coordinator: str,
) -> None:
    stub, url = coordinator
    h = await on_replicas([stopped_coordinator, url]).start()
    try:
        await early_branch(h, "g1", "w")
        status = await h.status("g1")
    finally:
        await h.stop()

    assert stub.enlisted == ENLISTED
    assert status == "prepared"


async def test_an_early_branch_enlists_with_the_next_replica_when_the_first_is_not_ready(
    on_replicas: Callable[[list[str]], ParticipantTestServer],
    coordinator: tuple[StubCoordinator, str],
    not_ready: tuple[StubCoordinator, str],
) -> None:
    stub, url = coordinator
    h = await on_replicas([not_ready[1], url]).start()
    try:
        await early_branch(h, "g1", "w")
    finally:
        await h.stop()

    assert stub.enlisted == ENLISTED
    assert not_ready[0].enlisted == {}


async def test_an_early_branch_stays_in_doubt_when_the_last_replica_tried_is_not_ready(
    on_replicas: Callable[[list[str]], ParticipantTestServer],
    stopped_coordinator: str,
    not_ready: tuple[StubCoordinator, str],
) -> None:
    h = await on_replicas([stopped_coordinator, not_ready[1]]).start()
    try:
        with pytest.raises(EnlistFailed, match="stays in doubt") as caught:
            await early_branch(h, "g1", "w")
        status = await h.status("g1")
    finally:
        await h.stop()

    assert stopped_coordinator in caught.value.message and not_ready[1] in caught.value.message
    assert status == "prepared"


async def test_an_early_branch_stays_in_doubt_when_no_replica_can_be_reached(
    on_replicas: Callable[[list[str]], ParticipantTestServer],
    stopped_coordinator: str,
    not_ready: tuple[StubCoordinator, str],
) -> None:
    h = await on_replicas([not_ready[1], stopped_coordinator]).start()
    try:
        with pytest.raises(CoordinatorUnreachable, match="stays in doubt"):
            await early_branch(h, "g1", "w")
        status = await h.status("g1")
    finally:
        await h.stop()

    assert status == "prepared"
    assert prepared_work(h) == {("g1", "p1"): ["w"]}


async def test_the_coordinator_refusing_an_enlistment_is_logged_with_its_reason(
    harness: ParticipantTestServer, stub: StubCoordinator
) -> None:
    stub.refuse_signature = "no participant named 'p1' is registered"
    with capture_logs() as logs, pytest.raises(EnlistFailed):
        await early_branch(harness, "g1", "w")

    (line,) = [line for line in logs if line["event"] == "coordinator refused the participant's enlistment"]
    assert line["reason"] == "invalid_signature: no participant named 'p1' is registered"
    assert line["gtid"] == "g1"
