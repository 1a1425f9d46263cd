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

import structlog

from twopc_core.rejections import RateLimitedWarnings

__all__ = ["RejectionLog"]

logger = structlog.get_logger("participant_sdk")


class RejectionLog(RateLimitedWarnings):
    """The participant's refusals, each line naming it (see :class:`RateLimitedWarnings`)."""

    def __init__(self, participant: str, interval: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(logger, interval, clock, participant=participant)
