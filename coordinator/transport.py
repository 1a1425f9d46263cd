"""The coordinator's HTTP client to participants.

Pooled keep-alive connections (one pool per participant), a deadline on every call,
a signature and a ``traceparent`` on every request, and phase-2 delivery retried with
capped exponential backoff and full jitter until the participant acknowledges.

A participant that times out, is unreachable or answers something that is not the
protocol is a ``no`` vote at prepare, never an exception in the coordinator.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import orjson
import structlog
from opentelemetry import propagate, trace
from pydantic import BaseModel, ValidationError

from coordinator.config import ParticipantSettings
from twopc.protocol import (
    AbortRequest,
    BranchStatus,
    CommitRequest,
    Outcome,
    OutcomeResponse,
    PrepareRequest,
    PrepareResponse,
    StatusRequest,
    StatusResponse,
    Vote,
)
from twopc.signing import signed_headers

__all__ = ["Backoff", "CallFailed", "Transport", "UnknownParticipant"]

log = structlog.get_logger(__name__)
tracer = trace.get_tracer(__name__)

R = TypeVar("R", bound=BaseModel)


class UnknownParticipant(KeyError):
    pass


class CallFailed(Exception):
    """A call got no usable answer: timeout, connection error, bad status or bad body."""


@dataclass(frozen=True)
class Backoff:
    base: float
    cap: float

    def delay(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
        return random.uniform(0, min(self.cap, self.base * (2 ** min(attempt, 32))))


class _Endpoint:
    def __init__(self, settings: ParticipantSettings) -> None:
        self.settings = settings
        connector = aiohttp.TCPConnector(limit=settings.max_connections, enable_cleanup_closed=True)
        self.session = aiohttp.ClientSession(
            connector=connector,
            json_serialize=lambda obj: orjson.dumps(obj).decode(),
            raise_for_status=False,
        )

    async def call(self, operation: str, message: BaseModel, response_type: type[R], timeout: float) -> R:
        body = orjson.dumps(message.model_dump(mode="json", exclude_defaults=True))
        headers = {"Content-Type": "application/json"}
        headers.update(signed_headers(self.settings.secret, operation, body))
        with tracer.start_as_current_span(
            f"participant.{operation}",
            kind=trace.SpanKind.CLIENT,
            attributes={"twopc.participant": self.settings.name},
        ):
            propagate.inject(headers)
            try:
                async with self.session.post(
                    f"{self.settings.url}/{operation}",
                    data=body,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=timeout),
                ) as response:
                    raw = await response.read()
                    status = response.status
            except TimeoutError:
                raise CallFailed(f"no answer within {timeout:.3g}s") from None
            except aiohttp.ClientError as exc:
                raise CallFailed(f"unreachable: {exc.__class__.__name__}: {exc}") from None
        if status != 200:
            raise CallFailed(f"answered HTTP {status}: {_error_message(raw)}")
        try:
            return response_type.model_validate(orjson.loads(raw))
        except (orjson.JSONDecodeError, ValidationError) as exc:
            raise CallFailed(f"answered something that is not the protocol: {_first_line(exc)}") from None


class Transport:
    """Calls to the registered participants, by name."""

    def __init__(
        self,
        participants: list[ParticipantSettings],
        backoff: Backoff,
        phase_two_timeout: float,
    ) -> None:
        self._settings = {p.name: p for p in participants}
        self._endpoints: dict[str, _Endpoint] = {}
        self._backoff = backoff
        self._phase_two_timeout = phase_two_timeout

    @property
    def participants(self) -> Mapping[str, ParticipantSettings]:
        return self._settings

    async def start(self) -> None:
        self._endpoints = {name: _Endpoint(s) for name, s in self._settings.items()}

    async def close(self) -> None:
        await asyncio.gather(*(e.session.close() for e in self._endpoints.values()))
        self._endpoints = {}

    def _endpoint(self, name: str) -> _Endpoint:
        try:
            return self._endpoints[name]
        except KeyError:
            raise UnknownParticipant(name) from None

    async def prepare(
        self, name: str, gtid: str, payload: Any, deadline: float, timeout: float
    ) -> tuple[Vote, str | None]:
        """Ask for a vote. Never raises: a call without a usable answer is a ``no``."""
        request = PrepareRequest(gtid=gtid, branch=name, payload=payload, deadline=deadline)
        try:
            answer = await self._endpoint(name).call("prepare", request, PrepareResponse, timeout)
        except CallFailed as exc:
            return Vote.NO, f"prepare failed: {exc}"
        return answer.vote, answer.reason

    async def one_phase(self, name: str, gtid: str, payload: Any, timeout: float) -> tuple[Outcome | None, str | None]:
        """Prepare and commit in one step; ``None`` when the outcome is not known."""
        request = CommitRequest(gtid=gtid, branch=name, one_phase=True, payload=payload)
        try:
            answer = await self._endpoint(name).call("commit", request, OutcomeResponse, timeout)
        except CallFailed as exc:
            return None, str(exc)
        return answer.status, answer.reason

    async def status(self, name: str, gtid: str) -> BranchStatus:
        request = StatusRequest(gtid=gtid, branch=name)
        answer = await self._endpoint(name).call("status", request, StatusResponse, self._phase_two_timeout)
        return answer.status

    async def deliver(self, name: str, gtid: str, outcome: Outcome, one_phase_payload: Any = None) -> Outcome:
        """Send phase 2 until the participant acknowledges; returns what it acknowledged.

        Retries for ever with capped, jittered backoff: a decided transaction must reach
        every branch. The caller cancels the task when the coordinator shuts down.
        """
        endpoint = self._endpoint(name)
        if outcome is Outcome.COMMITTED:
            request: BaseModel = CommitRequest(gtid=gtid, branch=name)
            operation = "commit"
        else:
            request = AbortRequest(gtid=gtid, branch=name)
            operation = "abort"
        attempt = 0
        while True:
            try:
                answer = await endpoint.call(operation, request, OutcomeResponse, self._phase_two_timeout)
                return answer.status
            except CallFailed as exc:
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


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0][:200]


def _error_message(raw: bytes) -> str:
    try:
        return str(orjson.loads(raw)["error"]["message"])[:200]
    except Exception:
        return raw[:120].decode(errors="replace") or "(empty body)"
