"""The mock queue as a resource: payload validation, votes, recovery and crash faults."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from adapters.mockqueue import Faults, FaultSwitch, MockQueueResource, QueueStore
from twopc_core.failpoints import CRASH_EXIT_CODE
from twopc_core.protocol import BranchStatus, Vote


class Crashed(Exception):
    """Stands in for os._exit, so the test process survives the crash."""


class Exits:
    def __init__(self) -> None:
        self.codes: list[int] = []

    def __call__(self, code: int) -> None:
        self.codes.append(code)
        raise Crashed(code)


@pytest.fixture
def exits() -> Exits:
    return Exits()


@pytest.fixture
async def resource(tmp_path: Path, exits: Exits) -> AsyncIterator[MockQueueResource]:
    r = MockQueueResource(QueueStore(tmp_path / "queue.db"), FaultSwitch(exit_process=exits))
    await r.start()
    yield r
    await r.close()


@pytest.mark.parametrize(
    ("payload", "complaint"),
    [
        (None, "must be an object"),
        (["a"], "must be an object"),
        ({}, 'no "items"'),
        ({"items": "abc"}, "must be a list"),
        ({"items": [1], "extra": True}, "unexpected fields ['extra']"),
    ],
)
async def test_payload_that_is_not_an_items_list_votes_no_saying_why(
    resource: MockQueueResource, payload: Any, complaint: str
) -> None:
    result = await resource.prepare("g1", "q", payload)

    assert result.vote is Vote.NO
    assert result.reason is not None and complaint in result.reason
    assert await resource.recover() == []


async def test_empty_items_vote_read_only(resource: MockQueueResource) -> None:
    result = await resource.prepare("g1", "q", {"items": []})

    assert result.vote is Vote.READ_ONLY
    assert await resource.recover() == []


async def test_prepare_stages_items_that_recover_lists(resource: MockQueueResource) -> None:
    result = await resource.prepare("g1", "q", {"items": [1, 2]})

    assert result.vote is Vote.YES
    assert await resource.recover() == [("g1", "q")]
    assert await resource.store.items() == []


async def test_commit_publishes_and_abort_drops(resource: MockQueueResource) -> None:
    await resource.prepare("kept", "q", {"items": ["k"]})
    await resource.prepare("dropped", "q", {"items": ["d"]})
    await resource.commit("kept", "q")
    await resource.abort("dropped", "q")

    assert [i.value for i in await resource.store.items()] == ["k"]
    assert await resource.recover() == []


async def test_vote_no_fault_refuses_without_staging(resource: MockQueueResource) -> None:
    resource.faults.set(Faults(vote="no"))
    result = await resource.prepare("g1", "q", {"items": [1]})

    assert (result.vote, result.reason) == (Vote.NO, "fault injected: vote no")
    assert await resource.recover() == []


async def test_crash_on_prepare_exits_once_the_items_are_staged(resource: MockQueueResource, exits: Exits) -> None:
    resource.faults.set(Faults(crash_on="prepare"))
    with pytest.raises(Crashed):
        await resource.prepare("g1", "q", {"items": [1]})

    assert exits.codes == [CRASH_EXIT_CODE]
    assert resource.store.is_staged("g1", "q")


async def test_crash_on_commit_exits_once_the_items_are_committed(resource: MockQueueResource, exits: Exits) -> None:
    await resource.prepare("g1", "q", {"items": [1]})
    resource.faults.set(Faults(crash_on="commit"))
    with pytest.raises(Crashed):
        await resource.commit("g1", "q")

    assert exits.codes == [CRASH_EXIT_CODE]
    assert [i.value for i in await resource.store.items()] == [1]


async def test_the_queue_holds_its_branches_state_staged_then_committed(resource: MockQueueResource) -> None:
    assert resource.holds_branch_state
    assert await resource.branch_status("g1", "q") is BranchStatus.UNKNOWN

    await resource.prepare("g1", "q", {"items": [1, 2]})
    assert await resource.branch_status("g1", "q") is BranchStatus.PREPARED

    await resource.commit("g1", "q")
    assert await resource.branch_status("g1", "q") is BranchStatus.COMMITTED


async def test_an_aborted_queue_branch_is_unknown_to_the_queue(resource: MockQueueResource) -> None:
    await resource.prepare("g1", "q", {"items": [1]})
    await resource.abort("g1", "q")

    assert await resource.branch_status("g1", "q") is BranchStatus.UNKNOWN


async def test_a_committed_queue_branch_is_known_after_a_reopen(tmp_path: Path) -> None:
    first = MockQueueResource(QueueStore(tmp_path / "queue.db"))
    await first.start()
    await first.prepare("g1", "q", {"items": ["x"]})
    await first.commit("g1", "q")
    await first.close()

    reopened = MockQueueResource(QueueStore(tmp_path / "queue.db"))
    await reopened.start()
    try:
        assert await reopened.branch_status("g1", "q") is BranchStatus.COMMITTED
    finally:
        await reopened.close()
