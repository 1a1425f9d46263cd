"""Warnings about refused calls, rate-limited.

A service that refuses a call (a bad signature, a stale timestamp, a token it does not
know) answers 401 and the caller sees why; the service's operator must see it too,
since the usual cause is a secret, a token or a clock set wrong on one side. A
misconfigured peer retries for ever, though, so each reason is logged at most once per
interval, with the count of refusals not logged since.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["RateLimitedWarnings"]


@dataclass
class _Reason:
    logged_at: float
    unlogged: int = 0


class RateLimitedWarnings:
    """Logs each refused call at warning level on ``logger``, at most once per reason
    every ``interval`` seconds (of ``clock``, monotonic by default); ``context`` goes on
    every line."""

    def __init__(
        self, logger: Any, interval: float = 60.0, clock: Callable[[], float] = time.monotonic, **context: object
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._context = context
        self._reasons: dict[str, _Reason] = {}

    def refused(self, event: str, reason: str, **context: object) -> None:
        """A call was refused for ``reason``: warn, unless this reason was logged less
        than an interval ago (then count it for the next line)."""
        now = self._clock()
        seen = self._reasons.get(reason)
        if seen is not None and now - seen.logged_at < self._interval:
            seen.unlogged += 1
            return
        unlogged = seen.unlogged if seen is not None else 0
        self._reasons[reason] = _Reason(now)
        # Refused for this reason since its last line, and not logged.
        self._logger.warning(event, **self._context, reason=reason, unlogged_since_last=unlogged, **context)
