"""Per-branch locks: one holder per key at a time, and nothing left once unused."""

from __future__ import annotations

import asyncio

import pytest

from participant_sdk._locks import KeyedLocks


async def test_holders_of_one_key_take_turns() -> None:
    locks = KeyedLocks()
    inside = 0
    most_inside = 0

    async def hold() -> None:
        nonlocal inside, most_inside
        async with locks.hold("k"):
            inside += 1
            most_inside = max(most_inside, inside)
            await asyncio.sleep(0)
            inside -= 1

    await asyncio.gather(*(hold() for _ in range(5)))
    assert most_inside == 1


async def test_different_keys_do_not_wait_for_each_other() -> None:
    locks = KeyedLocks()
    async with locks.hold("a"):
        await asyncio.wait_for(_enter_and_leave(locks, "b"), timeout=1)


async def test_a_key_nobody_holds_or_awaits_leaves_nothing_behind() -> None:
    locks = KeyedLocks()
    async with locks.hold("k"):
        assert len(locks) == 1
    assert len(locks) == 0


async def test_a_holder_that_raises_releases_the_lock() -> None:
    locks = KeyedLocks()
    with pytest.raises(RuntimeError):
        async with locks.hold("k"):
            raise RuntimeError("boom")
    assert len(locks) == 0
    await asyncio.wait_for(_enter_and_leave(locks, "k"), timeout=1)


async def test_a_waiter_cancelled_before_its_turn_leaves_nothing_behind() -> None:
    locks = KeyedLocks()
    async with locks.hold("k"):
        waiter = asyncio.create_task(_enter_and_leave(locks, "k"))
        await asyncio.sleep(0)  # the waiter queues on the lock
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    assert len(locks) == 0
    await asyncio.wait_for(_enter_and_leave(locks, "k"), timeout=1)


async def _enter_and_leave(locks: KeyedLocks, key: str) -> None:
    async with locks.hold(key):
        pass
