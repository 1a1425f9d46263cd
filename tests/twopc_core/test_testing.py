"""The testing tools shipped with twopc."""

from __future__ import annotations

import asyncio

import pytest

from twopc_core.testing import FakeClock, ManualTimer, wait_until


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


def test_manual_timer_runs_nothing_until_the_time_is_moved_on() -> None:
    timer = ManualTimer()
    fired: list[str] = []
    timer.call_later(5, lambda: fired.append("five"))

    assert timer.advance(4.9) == 0
    assert fired == []
    assert [call.delay for call in timer.pending] == [5]
    assert timer.advance(0.1) == 1
    assert fired == ["five"]
    assert timer.pending == []


def test_manual_timer_runs_due_calls_soonest_first_at_their_own_time() -> None:
    clock = FakeClock(start=0.0)
    timer = ManualTimer(clock)
    seen: list[tuple[str, float]] = []
    timer.call_later(3, lambda: seen.append(("three", clock.now())))
    timer.call_later(1, lambda: seen.append(("one", clock.now())))
    timer.call_later(9, lambda: seen.append(("nine", clock.now())))

    assert timer.advance(5) == 2
    assert seen == [("one", 1.0), ("three", 3.0)]
    assert clock.now() == 5.0
    assert [call.when for call in timer.pending] == [9.0]


def test_manual_timer_runs_a_call_set_by_a_callback_if_it_falls_due_in_the_same_span() -> None:
    timer = ManualTimer(FakeClock(start=0.0))
    fired: list[str] = []

    def first() -> None:
        fired.append("first")
        timer.call_later(1, lambda: fired.append("second"))
        timer.call_later(10, lambda: fired.append("too late"))

    timer.call_later(1, first)

    assert timer.advance(2) == 2
    assert fired == ["first", "second"]
    assert [call.when for call in timer.pending] == [11.0]


def test_a_cancelled_call_of_a_manual_timer_never_runs() -> None:
    timer = ManualTimer()
    fired: list[str] = []
    call = timer.call_later(1, lambda: fired.append("x"))
    call.cancel()

    assert call.cancelled()
    assert timer.pending == []
    assert timer.advance(10) == 0
    assert fired == []
