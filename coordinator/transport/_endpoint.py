"""One participant's endpoint: pooled keep-alive HTTP or a channel, signed calls, coalesced into batches.

Calls bound for one participant wait in a queue. Up to ``max_inflight`` exchanges run
at once; whatever is queued when a slot frees up goes in the next exchange — alone as
its own operation, or several together as one ``batch``. The queue is looked at once
per turn of the event loop, so calls made in one turn share an exchange. An idle
system therefore sends each call at once, with no timer, and a loaded one sends few,
large exchanges: one HTTP round trip and one signature for many transactions.

An exchange goes over the participant's channel (one WebSocket, see ``_channel``)
while one is open, else over HTTP; it is the same exchange either way, answered alike.

There are two such queues, two lanes: one for the work (prepare, and a one-phase
commit), one for phase 2 and inquiries. A batch is answered only once all of it is done,
and a prepare may wait on a lock that only another transaction's COMMIT releases; were
that COMMIT queued behind the waiting prepares, neither would move until a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import urlsplit

import aiohttp
import orjson
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, format_span_id, format_trace_id
from pydantic import BaseModel, ValidationError

from coordinator.config import ParticipantSettings
from coordinator.metrics import CoordinatorMetrics
from coordinator.transport._channel import Channel, ChannelClosed
from twopc_core import telemetry
from twopc_core.metrics import Observer
from twopc_core.signing import signed_headers

__all__ = ["CallFailed", "Endpoint"]

tracer = trace.get_tracer(__name__)

R = TypeVar("R", bound=BaseModel)

#: The media type of a batch answered op by op.
NDJSON = "application/x-ndjson"

#: Most operations one batch exchange carries.
MAX_BATCH = 512


class _Response(Protocol):
    """What an exchange's answer is read through: an HTTP response, or a channel's frames."""

    @property
    def status(self) -> int: ...

    @property
    def content_type(self) -> str: ...

    @property
    def content(self) -> AsyncIterable[bytes]: ...

    async def read(self) -> bytes: ...


class CallFailed(Exception):
    """A call got no usable answer: timeout, connection error, bad status or bad body."""


@dataclass(eq=False)
class _Call(Generic[R]):
    operation: str
    body: dict[str, Any]
    response_type: type[R]
    timeout: float
    future: asyncio.Future[R]
    #: The span current when the call was made: its transaction's trace, whatever
    #: exchange ends up carrying the call.
    origin: trace.Span

    def fail(self, reason: str) -> None:
        if not self.future.done():
            self.future.set_exception(CallFailed(reason))

    def answer(self, raw: Any) -> None:
        if self.future.done():
            return
        try:
            self.future.set_result(self.response_type.model_validate(raw))
        except ValidationError as exc:
            self.fail(f"answered something that is not the protocol: {_first_line(exc)}")


class _Lane:
    """A queue of calls and the exchanges that carry them, at most ``max_inflight`` at once."""

    def __init__(self, endpoint: Endpoint, max_inflight: int) -> None:
        self._endpoint = endpoint
        self._max_inflight = max_inflight
        self._queue: list[_Call[Any]] = []
        self._inflight = 0
        self._pump_scheduled = False
        self.tasks: set[asyncio.Task[None]] = set()

    def add(self, call: _Call[Any]) -> None:
        self._queue.append(call)
        if not self._pump_scheduled:
            # At the end of this turn: the other calls this turn makes go along.
            self._pump_scheduled = True
            asyncio.get_running_loop().call_soon(self._scheduled_pump)

    def _scheduled_pump(self) -> None:
        self._pump_scheduled = False
        self._pump()

    def _pump(self) -> None:
        while self._queue and self._inflight < self._max_inflight:
            calls = self._queue[:MAX_BATCH]
            del self._queue[: len(calls)]
            live = [c for c in calls if not c.future.done()]  # expired while queued
            if not live:
                continue
            self._inflight += 1
            task = asyncio.create_task(self._endpoint.exchange(live))
            self.tasks.add(task)
            task.add_done_callback(self._exchange_done)

    def _exchange_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self._inflight -= 1
        self._pump()


#: Operations that do a branch's work, and may wait on its locks.
_WORK = frozenset({"prepare"})


class Endpoint:
    def __init__(
        self, settings: ParticipantSettings, max_inflight: int = 4, metrics: CoordinatorMetrics | None = None
    ) -> None:
        self.settings = settings
        self._metrics = metrics if metrics is not None else CoordinatorMetrics(enabled=False)
        #: The exchange histograms' series by operation, found once (a lookup per call otherwise).
        self._exchange_seconds: dict[str, Observer] = {}
        self._exchange_calls = self._metrics.exchange_calls(settings.name)
        self._work = _Lane(self, max_inflight)
        self._finish = _Lane(self, max_inflight)
        # An https:// participant is checked against its own CA file, if it has one; a
        # certificate that does not verify fails the call like any connection error.
        connector = aiohttp.TCPConnector(
            limit=settings.max_connections, enable_cleanup_closed=True, ssl=settings.client_ssl() or True
        )
        self.session = aiohttp.ClientSession(connector=connector, raise_for_status=False)
        #: The WebSocket channel exchanges go over while it is open (HTTP otherwise).
        self.channel = Channel(settings, self.session) if settings.channel else None
        self.exchanges = 0
        self.channel_exchanges = 0
        self.calls = 0
        #: Exchanges that got no usable answer, and phase-2 calls sent again after one.
        self.failed_exchanges = 0
        self.phase_two_retries = 0
        #: The last exchange's result, for operators: (unix time, error or None).
        self.last_exchange: tuple[float, str | None] | None = None

    def start(self) -> None:
        """Ask for the channel now, so that the first calls find it open."""
        if self.channel is not None:
            self.channel.ensure()

    async def close(self) -> None:
        if self.channel is not None:
            await self.channel.close()
        tasks = self._work.tasks | self._finish.tasks
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.session.close()

    async def call(self, operation: str, body: dict[str, Any], response_type: type[R], timeout: float) -> R:
        """Send one protocol operation; ``body`` is the JSON of its request message."""
        loop = asyncio.get_running_loop()
        call: _Call[R] = _Call(operation, body, response_type, timeout, loop.create_future(), trace.get_current_span())
        # Each call keeps its own deadline, whatever exchange carries it.
        expiry = loop.call_later(timeout, call.fail, f"no answer within {timeout:.3g}s")
        self.calls += 1
        does_work = operation in _WORK or body.get("one_phase", False)
        (self._work if does_work else self._finish).add(call)
        try:
            return await call.future
        finally:
            expiry.cancel()

    async def exchange(self, calls: list[_Call[Any]]) -> None:
        """One HTTP exchange carrying ``calls``: alone, or as a batch."""
        self.exchanges += 1
        operation = calls[0].operation if len(calls) == 1 else "batch"
        started = time.perf_counter()
        try:
            if len(calls) == 1:
                (call,) = calls
                call.answer(await self._post(call))
            else:
                ops = {"ops": [_batch_op(c) for c in calls]}
                await self._post_batch(orjson.dumps(ops), calls)
        except CallFailed as exc:
            self.failed_exchanges += 1
            self.last_exchange = (time.time(), str(exc))
            for call in calls:
                call.fail(str(exc))
            return
        except BaseException:
            for call in calls:
                call.fail("the coordinator is shutting down")
            raise
        finally:
            self._observe(operation, time.perf_counter() - started, len(calls))
        self.last_exchange = (time.time(), None)

    def _observe(self, operation: str, seconds: float, calls: int) -> None:
        series = self._exchange_seconds.get(operation)
        if series is None:
            series = self._exchange_seconds[operation] = self._metrics.exchange_seconds(self.settings.name, operation)
        series.observe(seconds)
        self._exchange_calls.observe(calls)

    async def _post_batch(self, body: bytes, calls: list[_Call[Any]]) -> None:
        """Send a batch and settle each call as its answer arrives.

        The participant answers op by op (NDJSON), so one slow op — a prepare waiting
        for a lock — does not hold back the others' answers. A participant that only
        answers the whole batch at once (``{"results": [...]}``) is understood too.
        """
        # The exchange is no one transaction's: a trace of its own, linked to each one's
        # when some trace records; else only ids of its own to carry, as a lone call's.
        traced = telemetry.records_root_spans() or any(c.origin.get_span_context().trace_flags.sampled for c in calls)
        if traced:
            links = [_link(c) for c in calls if c.origin.get_span_context().is_valid]
            parent = Context()
        else:
            links, parent = [], trace.set_span_in_context(telemetry.unrecorded_root_span())
        attributes = {"twopc.batch.ops": len(calls)}
        timeout = max(c.timeout for c in calls)
        async with self._request("batch", body, timeout, parent, NDJSON, links, attributes) as response:
            if response.status != 200:
                raise CallFailed(f"answered HTTP {response.status}: {_error_message(await response.read())}")
            if response.content_type == NDJSON:
                async for line in response.content:
                    if line.strip():
                        _settle_line(calls, line)
            else:
                _settle_all(calls, await response.read())
        for call in calls:
            call.fail("the participant's batch answer left this op out")

    @contextlib.asynccontextmanager
    async def _request(
        self,
        operation: str,
        body: bytes,
        timeout: float,
        parent: Context | None,
        accept: str = "application/json",
        links: Sequence[Link] = (),
        attributes: dict[str, Any] | None = None,
    ) -> AsyncIterator[_Response]:
        """POST a signed operation, in a CLIENT span under ``parent`` (the current
        context when ``None``); failures to get an answer become :class:`CallFailed`."""
        headers = {"Content-Type": "application/json", "Accept": accept}
        url = f"{self.settings.url}/{operation}"
        recording = telemetry.records_root_spans() or trace.get_current_span(parent).is_recording()
        if recording or links:
            span: Any = tracer.start_as_current_span(
                f"participant.{operation}",
                context=parent,
                kind=trace.SpanKind.CLIENT,
                links=links,
                attributes={**self._span_attributes(url), **(attributes or {})},
            )
        else:  # a span nobody records: the caller's trace context is all the call needs
            span = contextlib.nullcontext()
        with span as current:
            propagate.inject(headers, context=None if current is not None else parent)
            channel = self.channel
            if channel is not None and channel.open:
                self.channel_exchanges += 1
                try:
                    async with asyncio.timeout(timeout):
                        async with channel.request(operation, body, headers.get("traceparent"), accept) as answer:
                            _answered(current, answer.status)
                            yield answer
                except TimeoutError:
                    _failed(current, "timeout")
                    raise CallFailed(f"no answer within {timeout:.3g}s") from None
                except ChannelClosed as exc:
                    _failed(current, "channel_closed")
                    raise CallFailed(f"unreachable: {exc}") from None
                return
            if channel is not None:
                channel.ensure()  # for the exchanges after this one
            headers.update(signed_headers(self.settings.secret, operation, body))
            try:
                async with self.session.post(
                    url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
                ) as response:
                    _answered(current, response.status)
                    yield response
            except TimeoutError:
                _failed(current, "timeout")
                raise CallFailed(f"no answer within {timeout:.3g}s") from None
            except aiohttp.ClientError as exc:
                _failed(current, exc.__class__.__name__)
                raise CallFailed(f"unreachable: {exc.__class__.__name__}: {exc}") from None

    def _span_attributes(self, url: str) -> dict[str, Any]:
        """The HTTP client attributes of OpenTelemetry's semantic conventions."""
        where = urlsplit(url)
        return {
            "twopc.participant": self.settings.name,
            "http.request.method": "POST",
            "url.full": url,
            "server.address": where.hostname or "",
            "server.port": where.port or (443 if where.scheme == "https" else 80),
        }

    async def _post(self, call: _Call[Any]) -> Any:
        """One call alone in its exchange, in its transaction's trace."""
        parent = trace.set_span_in_context(call.origin)
        attributes = {"twopc.gtid": call.body.get("gtid", "")}
        body = orjson.dumps(call.body)
        async with self._request(call.operation, body, call.timeout, parent, attributes=attributes) as response:
            raw = await response.read()
            status = response.status
            if status != 200:
                raise CallFailed(f"answered HTTP {status}: {_error_message(raw)}")
            try:
                answer = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise CallFailed(f"answered something that is not the protocol: {_first_line(exc)}") from None
            _annotate(trace.get_current_span(), call.operation, answer)
            return answer


def _batch_op(call: _Call[Any]) -> dict[str, Any]:
    """A call as a batch's op; one whose transaction is traced carries its trace
    context, for the participant's span of it to join that trace."""
    op = {"op": call.operation, **call.body}
    context = call.origin.get_span_context()
    if context.trace_flags.sampled:
        op["traceparent"] = f"00-{format_trace_id(context.trace_id)}-{format_span_id(context.span_id)}-01"
    return op


def _link(call: _Call[Any]) -> Link:
    return Link(
        call.origin.get_span_context(),
        {"twopc.gtid": call.body.get("gtid", ""), "twopc.operation": call.operation},
    )


def _annotate(span: trace.Span, operation: str, answer: Any) -> None:
    """The participant's answer on the exchange's span: its vote, or the outcome."""
    if not span.is_recording() or not isinstance(answer, dict):
        return
    if operation == "prepare" and "vote" in answer:
        span.set_attribute("twopc.vote", str(answer["vote"]))
    elif operation in ("commit", "abort") and "status" in answer:
        span.set_attribute("twopc.outcome", str(answer["status"]))
    elif operation == "status" and "status" in answer:
        span.set_attribute("twopc.status", str(answer["status"]))


def _answered(span: trace.Span | None, status: int) -> None:
    if span is not None:
        span.set_attribute("http.response.status_code", status)
        if status >= 400:
            span.set_status(trace.StatusCode.ERROR)
            span.set_attribute("error.type", str(status))


def _failed(span: trace.Span | None, error_type: str) -> None:
    if span is not None:
        span.set_status(trace.StatusCode.ERROR)
        span.set_attribute("error.type", error_type)


def _settle(call: _Call[Any], result: Any) -> None:
    if isinstance(result, dict) and isinstance(result.get("error"), dict):
        call.fail(f"answered error: {_error_text(result['error'])}")
    else:
        call.answer(result)


def _settle_line(calls: list[_Call[Any]], line: bytes) -> None:
    """One NDJSON line of a batch answer: ``{"index": i, "result": {...}}``."""
    try:
        item = orjson.loads(line)
        index = item["index"]
        result = item["result"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise CallFailed("answered a batch that is not the protocol") from None
    if not isinstance(index, int) or not 0 <= index < len(calls):
        raise CallFailed("answered a batch that is not the protocol")
    _settle(calls[index], result)


def _settle_all(calls: list[_Call[Any]], raw: bytes) -> None:
    try:
        results = orjson.loads(raw).get("results")
    except (orjson.JSONDecodeError, AttributeError):
        results = None
    if not isinstance(results, list) or len(results) != len(calls):
        raise CallFailed("answered a batch that is not the protocol")
    for call, result in zip(calls, results, strict=True):
        _settle(call, result)


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0][:200]


def _error_text(error: dict[str, Any]) -> str:
    return f"{error.get('code', '?')}: {str(error.get('message', ''))[:200]}"


def _error_message(raw: bytes) -> str:
    try:
        return _error_text(orjson.loads(raw)["error"])
    except Exception:
        return raw[:120].decode(errors="replace") or "(empty body)"
