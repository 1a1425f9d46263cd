"""Testing tools shipped with twopc, for its own tests and for its users'.

- :func:`wait_until`: wait on a condition with a deadline, never a bare sleep.
- :class:`FakeClock`: time that moves only when a test moves it.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["FakeClock", "wait_until"]

T = TypeVar("T")


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
