"""Warnings about refused calls, rate-limited.

A participant that refuses a protocol call (bad signature, stale timestamp, unsigned)
answers 401, and the caller sees why; the operator of the participant must see it
too, since the usual cause is a secret or a clock set wrong on one side. A
misconfigured coordinator retries for ever, though, so each reason is logged at most
once per interval, with the count of refusals not logged since.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

__all__ = ["RejectionLog"]

logger = structlog.get_logger("participant_sdk")


@dataclass
class _Reason:
    logged_at: float
    unlogged: int = 0


class RejectionLog:
    """Logs each refused call at warning level, at most once per reason every
    ``interval`` seconds (of ``clock``, monotonic by default)."""

    def __init__(self, participant: str, interval: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._participant = participant
        self._interval = interval
        self._clock = clock
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
        logger.warning(
            event,
            participant=self._participant,
            reason=reason,
            # Refused for this reason since its last line, and not logged.
            unlogged_since_last=unlogged,
            **context,
        )
