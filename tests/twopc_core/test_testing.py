"""The testing tools shipped with twopc."""

from __future__ import annotations

import asyncio

import pytest

from twopc_core.testing import FakeClock, wait_until


async def test_wait_until_returns_the_truthy_value() -> None:
    calls = []

    def condition() -> list[int] | None:
        calls.append(1)
        return calls if len(calls) == 3 else None

    assert await wait_until(condition, timeout=5, interval=0) == [1, 1, 1]


async def test_wait_until_awaits_an_async_condition() -> None:
    ready = asyncio.Event()
    asyncio.get_running_loop().call_soon(ready.set)

    async def condition() -> bool:
        return ready.is_set()

    assert await wait_until(condition, timeout=5, interval=0) is True


async def test_wait_until_times_out_naming_what_it_waited_for() -> None:
    with pytest.raises(TimeoutError, match="the moon"):
        await wait_until(lambda: False, timeout=0.05, interval=0.01, message="the moon")


def test_fake_clock_moves_only_when_advanced() -> None:
    clock = FakeClock(start=100.0)
    assert clock.now() == clock.monotonic() == 100.0
    clock.advance(2.5)
    assert clock.now() == 102.5
