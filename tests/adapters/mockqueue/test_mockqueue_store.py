"""The queue store: committed items in commit order, each exactly once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters.mockqueue.store import QueueStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[QueueStore]:
    s = QueueStore(tmp_path / "queue.db")
    await s.open()
    yield s
    await s.close()


async def values(store: QueueStore) -> list[object]:
    return [item.value for item in await store.items()]


async def test_a_branch_commits_its_items_in_order_with_rising_seqs(store: QueueStore) -> None:
    await store.stage("g1", "q", ["a", "b", "c"])
    await store.commit("g1", "q")
    items = await store.items()

    assert [i.value for i in items] == ["a", "b", "c"]
    assert [i.gtid for i in items] == ["g1"] * 3
    assert items[0].seq < items[1].seq < items[2].seq


async def test_branches_are_appended_in_commit_order_not_prepare_order(store: QueueStore) -> None:
    await store.stage("first-prepared", "q", [1, 2])
    await store.stage("second-prepared", "q", [3])
    await store.commit("second-prepared", "q")
    await store.commit("first-prepared", "q")

    assert await values(store) == [3, 1, 2]


async def test_committing_twice_adds_each_item_once(store: QueueStore) -> None:
    await store.stage("g1", "q", ["x", "y"])
    await store.commit("g1", "q")
    await store.commit("g1", "q")

    assert await values(store) == ["x", "y"]


async def test_staging_twice_then_committing_adds_each_item_once(store: QueueStore) -> None:
    await store.stage("g1", "q", ["x", "y"])
    await store.stage("g1", "q", ["x", "y"])
    await store.commit("g1", "q")

    assert await values(store) == ["x", "y"]


async def test_dropped_items_are_never_committed(store: QueueStore) -> None:
    await store.stage("g1", "q", ["x"])
    await store.drop("g1", "q")
    await store.commit("g1", "q")

    assert await values(store) == []
    assert store.staged() == []


async def test_items_keep_their_json_types(store: QueueStore) -> None:
    stored = ["1", 1, 1.5, None, True, {"a": [1, {"b": None}]}, [], ""]
    await store.stage("g1", "q", stored)
    await store.commit("g1", "q")

    assert await values(store) == stored


async def test_a_large_branch_keeps_its_order(store: QueueStore) -> None:
    many = list(range(2500))  # more than one INSERT statement's worth
    await store.stage("g1", "q", many)
    await store.commit("g1", "q")

    assert await values(store) == many


async def test_items_page_after_a_seq_with_a_limit(store: QueueStore) -> None:
    await store.stage("g1", "q", ["a", "b", "c", "d"])
    await store.commit("g1", "q")
    first = await store.items(limit=2)
    rest = await store.items(after=first[-1].seq)

    assert [i.value for i in first] == ["a", "b"]
    assert [i.value for i in rest] == ["c", "d"]


async def test_unstorable_item_is_refused_before_anything_is_staged(store: QueueStore) -> None:
    with pytest.raises(ValueError, match="item 1"):
        await store.stage("g1", "q", [1, 2**70])

    assert store.staged() == []


async def test_staged_and_committed_items_survive_a_reopen(tmp_path: Path) -> None:
    first = QueueStore(tmp_path / "queue.db")
    await first.open()
    await first.stage("done", "q", ["kept"])
    await first.commit("done", "q")
    await first.stage("open", "q", ["staged"])
    await first.close()

    second = QueueStore(tmp_path / "queue.db")
    await second.open()
    try:
        assert second.staged() == [("open", "q")]
        assert await values(second) == ["kept"]
        await second.commit("open", "q")
        assert await values(second) == ["kept", "staged"]
    finally:
        await second.close()
