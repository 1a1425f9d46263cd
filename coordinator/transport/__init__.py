"""The coordinator's HTTP client to participants.

Pooled keep-alive connections (one pool per participant) or, with a participant that
offers it, one WebSocket channel carrying the same exchanges as frames; a deadline on every call,
a signature and a ``traceparent`` on every request (a lone call's is its transaction's
trace; a batch exchange has a trace of its own, linked to each transaction's, and each
traced op carries its own), calls to one participant coalesced into batch exchanges
under load (see ``_endpoint``), and phase-2 delivery retried with capped exponential
backoff and full jitter until the participant acknowledges.

A participant that times out, is unreachable or answers something that is not the
protocol is a ``no`` vote at prepare, never an exception in the coordinator.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from coordinator.config import ParticipantSettings
from coordinator.metrics import CoordinatorMetrics
from coordinator.transport._endpoint import CallFailed, Endpoint
from twopc_core.protocol import (
    BranchStatus,
    Outcome,
    OutcomeResponse,
    PrepareResponse,
    StatusResponse,
    Vote,
)

__all__ = ["Backoff", "CallFailed", "EndpointCounts", "Transport", "UnknownParticipant"]

log = structlog.get_logger(__name__)


class UnknownParticipant(KeyError):
    pass


@dataclass(frozen=True)
class EndpointCounts:
    """What the coordinator did with one participant since it started."""

    calls: int
    exchanges: int
    failed_exchanges: int
    phase_two_retries: int
    #: Of the exchanges, those sent over the participant's channel; and whether it is open now.
    channel_exchanges: int = 0
    channel_open: bool = False


@dataclass(frozen=True)
class Backoff:
    base: float
    cap: float

    def delay(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
        return random.uniform(0, min(self.cap, self.base * (2 ** min(attempt, 32))))


class Transport:
    """Calls to the registered participants, by name."""

    def __init__(
        self,
        participants: list[ParticipantSettings],
        backoff: Backoff,
        phase_two_timeout: float,
        metrics: CoordinatorMetrics | None = None,
    ) -> None:
        self._settings = {p.name: p for p in participants}
        self._metrics = metrics
        self._endpoints: dict[str, Endpoint] = {}
        self._backoff = backoff
        self._phase_two_timeout = phase_two_timeout

    @property
    def participants(self) -> Mapping[str, ParticipantSettings]:
        return self._settings

    async def start(self) -> None:
        self._endpoints = {
            name: Endpoint(s, s.max_inflight_exchanges, self._metrics) for name, s in self._settings.items()
        }
        for endpoint in self._endpoints.values():
            endpoint.start()

    async def close(self) -> None:
        await asyncio.gather(*(e.close() for e in self._endpoints.values()))
        self._endpoints = {}

    def _endpoint(self, name: str) -> Endpoint:
        try:
            return self._endpoints[name]
        except KeyError:
            raise UnknownParticipant(name) from None

    async def prepare(
        self, name: str, gtid: str, payload: Any, deadline: float, timeout: float
    ) -> tuple[Vote, str | None]:
        """Ask for a vote. Never raises: a call without a usable answer is a ``no``."""
        # Plain dicts of the protocol's messages: the coordinator made every field itself,
        # so validating them again would only cost time on the hot path.
        request = {"gtid": gtid, "branch": name, "payload": payload, "deadline": deadline}
        try:
            answer = await self._endpoint(name).call("prepare", request, PrepareResponse, timeout)
        except CallFailed as exc:
            return Vote.NO, f"prepare failed: {exc}"
        return answer.vote, answer.reason

    async def one_phase(
        self, name: str, gtid: str, payload: Any, deadline: float, timeout: float
    ) -> tuple[Outcome | None, str | None]:
        """Prepare and commit in one step; ``None`` when the outcome is not known."""
        request = {"gtid": gtid, "branch": name, "one_phase": True, "payload": payload, "deadline": deadline}
        try:
            answer = await self._endpoint(name).call("commit", request, OutcomeResponse, timeout)
        except CallFailed as exc:
            return None, str(exc)
        return answer.status, answer.reason

    async def status(self, name: str, gtid: str) -> BranchStatus:
        request = {"gtid": gtid, "branch": name}
        answer = await self._endpoint(name).call("status", request, StatusResponse, self._phase_two_timeout)
        return answer.status

    def health(self, name: str) -> dict[str, Any]:
        """What the last exchange with a participant said: ``unknown`` before any."""
        last = self._endpoint(name).last_exchange
        if last is None:
            return {"status": "unknown", "checked_at": None, "error": None}
        at, error = last
        return {"status": "unreachable" if error else "ok", "checked_at": at, "error": error}

    def exchange_stats(self) -> dict[str, int]:
        """Calls made and HTTP exchanges that carried them, over all participants."""
        return {
            "participant_calls": sum(e.calls for e in self._endpoints.values()),
            "participant_exchanges": sum(e.exchanges for e in self._endpoints.values()),
        }

    def endpoint_counts(self) -> dict[str, EndpointCounts]:
        """Each participant's counts since start, by name."""
        return {
            name: EndpointCounts(
                e.calls,
                e.exchanges,
                e.failed_exchanges,
                e.phase_two_retries,
                e.channel_exchanges,
                e.channel is not None and e.channel.open,
            )
            for name, e in self._endpoints.items()
        }

    async def deliver(self, name: str, gtid: str, outcome: Outcome) -> OutcomeResponse:
        """Send phase 2 until the participant acknowledges; returns its answer (whose
        status differs from ``outcome`` where an operator forced the branch otherwise).

        Retries for ever with capped, jittered backoff: a decided transaction must reach
        every branch. The caller cancels the task when the coordinator shuts down.
        """
        endpoint = self._endpoint(name)
        request = {"gtid": gtid, "branch": name}
        operation = "commit" if outcome is Outcome.COMMITTED else "abort"
        attempt = 0
        while True:
            try:
                return await endpoint.call(operation, request, OutcomeResponse, self._phase_two_timeout)
            except CallFailed as exc:
                endpoint.phase_two_retries += 1
                delay = self._backoff.delay(attempt)
                log.warning(
                    "phase 2 not acknowledged, retrying",
                    gtid=gtid,
                    participant=name,
                    operation=operation,
                    attempt=attempt + 1,
                    retry_in=round(delay, 3),
                    error=str(exc),
                )
                attempt += 1
                await asyncio.sleep(delay)
