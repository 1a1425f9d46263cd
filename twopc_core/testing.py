"""Testing tools shipped with twopc, for its own tests and for its users'.

- :func:`wait_until`: wait on a condition with a deadline, never a bare sleep.
- :class:`FakeClock`: time that moves only when a test moves it.
- :class:`ManualTimer`: delayed calls (``call_later``) that run only when a test moves
  the time on, for code that takes a timer (:class:`twopc_core.groupcommit.GroupCommitter`).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, overload

__all__ = ["FakeClock", "ManualTimer", "ScheduledCall", "wait_until"]

T = TypeVar("T")


@overload
async def wait_until(
    condition: Callable[[], Awaitable[T]], timeout: float = ..., interval: float = ..., message: str = ...
) -> T: ...


@overload
async def wait_until(
    condition: Callable[[], T], timeout: float = ..., interval: float = ..., message: str = ...
) -> T: ...


async def wait_until(
    condition: Callable[[], T | Awaitable[T]],
    timeout: float = 10.0,
    interval: float = 0.02,
    message: str = "condition",
) -> T:
    """Poll ``condition`` (sync or async) until it returns something truthy; return it.

    Raises ``TimeoutError`` naming ``message`` once ``timeout`` seconds have passed.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {message}")
        await asyncio.sleep(interval)


class FakeClock:
    """A clock for tests: ``now()`` is wall time in seconds, moved by :meth:`advance`."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds


class ScheduledCall:
    """A call set on a :class:`ManualTimer`, due at ``when`` on the timer's clock."""

    def __init__(self, when: float, delay: float, callback: Callable[[], object]) -> None:
        self.when = when
        self.delay = delay
        self.callback = callback
        self._cancelled = False

    def cancel(self) -> None:
        self._cancelled = True

    def cancelled(self) -> bool:
        return self._cancelled

    def __repr__(self) -> str:
        return f"ScheduledCall(when={self.when}, delay={self.delay}, cancelled={self._cancelled})"


class ManualTimer:
    """A stand-in for the event loop's ``call_later`` whose calls run only when a test
    moves the time on with :meth:`advance`.

    It keeps time on ``clock`` (a new :class:`FakeClock` unless given), so that the code
    under test can read the time the timer fires by. :attr:`pending` shows what is set
    and not yet run: a test waits for a call to be set, looks at its delay, then
    advances past it.
    """

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.clock = clock if clock is not None else FakeClock()
        self._calls: list[ScheduledCall] = []

    def call_later(self, delay: float, callback: Callable[[], object]) -> ScheduledCall:
        """Set ``callback`` to run once the time has moved ``delay`` seconds on."""
        call = ScheduledCall(self.clock.now() + delay, delay, callback)
        self._calls.append(call)
        return call

    @property
    def pending(self) -> list[ScheduledCall]:
        """The calls set and neither run nor cancelled, soonest first."""
        return sorted((call for call in self._calls if not call.cancelled()), key=lambda call: call.when)

    def advance(self, seconds: float) -> int:
        """Move the clock on by ``seconds`` and run every call due by then, soonest
        first (one set by another's callback too, if it falls due in the same span);
        return how many ran."""
        until = self.clock.now() + seconds
        ran = 0
        while due := [call for call in self.pending if call.when <= until]:
            call = due[0]
            self._calls.remove(call)
            # While a call runs the clock reads its due time, as a loop's would.
            self._move_to(call.when)
            call.callback()
            ran += 1
        self._move_to(until)
        self._calls = [call for call in self._calls if not call.cancelled()]
        return ran

    def _move_to(self, when: float) -> None:
        if when > self.clock.now():
            self.clock.advance(when - self.clock.now())
