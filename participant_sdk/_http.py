"""The participant protocol over HTTP: signatures, parsing, JSON answers, spans.

The one place where the SDK's domain errors become HTTP answers:
:data:`PARTICIPANT_ERRORS` gives each its status and code, for
:func:`twopc_core.http.error_middleware` (the protocol app's, and any embedding
service's that lets them through) and for the error slots of a batch's answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import orjson
from aiohttp import web
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from pydantic import BaseModel, TypeAdapter, ValidationError

from participant_sdk._branch import describe
from participant_sdk._core import BatchResult, BranchHandler
from participant_sdk._rejections import RejectionLog
from participant_sdk.errors import (
    AlreadyCommitted,
    BranchExists,
    CoordinatorUnreachable,
    EnlistFailed,
    EnlistRefused,
    LogWriteFailed,
    NotInDoubt,
    NotPrepared,
    PayloadMismatch,
    ResourceFailed,
)
from twopc_core.failpoints import FailpointError
from twopc_core.http import (
    DomainErrors,
    HttpError,
    Middleware,
    domain_answer,
    error_body,
    error_middleware,
    invalid_body,
    json_response,
    read_body,
    validation_details,
)
from twopc_core.protocol import (
    AbortRequest,
    BatchOp,
    CommitRequest,
    ForceRequest,
    OutcomeResponse,
    PrepareRequest,
    PrepareResponse,
    StatusRequest,
    StatusResponse,
)
from twopc_core.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, SignatureError, verify

__all__ = ["MAX_BODY_BYTES", "NDJSON", "PARTICIPANT_ERRORS", "build_protocol_app", "encode_result", "parse_ops"]

#: The largest protocol request taken by default (413 beyond): a batch of thousands of prepares.
MAX_BODY_BYTES = 16 * 1024 * 1024

#: The status and code each of the SDK's errors is answered with: the one table.
PARTICIPANT_ERRORS: DomainErrors = {
    NotPrepared: (409, "not_prepared"),
    PayloadMismatch: (409, "payload_mismatch"),
    AlreadyCommitted: (409, "already_committed"),
    BranchExists: (409, "branch_exists"),
    NotInDoubt: (409, "not_in_doubt"),
    EnlistRefused: (409, "enlist_refused"),
    ResourceFailed: (503, "resource_error"),
    LogWriteFailed: (503, "log_error"),
    EnlistFailed: (503, "enlist_failed"),
    CoordinatorUnreachable: (503, "coordinator_unreachable"),
    FailpointError: (503, "failpoint"),
}

#: The media type of a batch answered op by op.
NDJSON = "application/x-ndjson"

_MAX_BATCH_OPS = 10_000
_BATCH_OP: TypeAdapter[BatchOp] = TypeAdapter(BatchOp)

Request = TypeVar("Request", bound=BaseModel)


# -- batches: parsing and encoding ----------------------------------------------------------


def parse_ops(raw_ops: Sequence[Any]) -> tuple[list[BatchOp], list[int], list[tuple[int, dict[str, Any]]]]:
    """Validate a batch's ops: the valid ones, the position of each in the batch, and
    the answer of each invalid one by its position."""
    ops: list[BatchOp] = []
    positions: list[int] = []
    refused: list[tuple[int, dict[str, Any]]] = []
    for position, raw in enumerate(raw_ops):
        try:
            ops.append(_BATCH_OP.validate_python(raw))
        except ValidationError as exc:
            problems = validation_details(exc)
            summary = "; ".join(f"{problem['field']}: {problem['problem']}" for problem in problems[:5])
            refused.append((position, error_body("invalid_request", f"invalid op: {summary}", problems)))
        else:
            positions.append(position)
    return ops, positions, refused


def encode_result(result: BatchResult) -> dict[str, Any]:
    """One op's answer as its slot in the batch's answer: the body it would have had
    alone, or ``{"error": ...}``."""
    if isinstance(result, BaseModel):
        return result.model_dump(mode="json")
    known = domain_answer(PARTICIPANT_ERRORS, result)
    if known is None:
        return error_body("internal", describe(result))
    return error_body(known[1], str(result), getattr(result, "details", None))


# -- the app ---------------------------------------------------------------------------------


class _Protocol:
    def __init__(
        self,
        handler: BranchHandler,
        secret: str,
        clock: Callable[[], float],
        tracer: trace.Tracer,
        max_body_bytes: int,
        rejections: RejectionLog,
    ) -> None:
        self._handler = handler
        self._rejections = rejections
        self._secret = secret
        self._max_body_bytes = max_body_bytes
        self._clock = clock
        self._tracer = tracer

    def route(
        self, operation: str, model: type[Request], call: Callable[[Request], Awaitable[BaseModel]]
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        what = f"the {operation} request"

        async def handle(request: web.Request) -> web.Response:
            body = await read_body(request, self._max_body_bytes)
            self._verify(request, operation, body)
            try:
                message = model.model_validate_json(body)
            except ValidationError as exc:
                raise invalid_body(exc, what=what, status=400) from None
            with self._span(request, operation) as span:
                if span.is_recording():
                    _describe(span, operation, message)
                answer = await call(message)
                if span.is_recording():
                    _annotate(span, operation, answer)
                    span.set_attribute("http.response.status_code", 200)
            return json_response(answer.model_dump(mode="json"))

        return handle

    async def batch(self, request: web.Request) -> web.StreamResponse:
        body = await read_body(request, self._max_body_bytes)
        self._verify(request, "batch", body)
        try:
            message = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise HttpError(400, "invalid_json", f"batch body is not JSON: {exc}") from None
        raw_ops = message.get("ops") if isinstance(message, dict) else None
        if not isinstance(raw_ops, list) or set(message) != {"ops"}:
            raise HttpError(400, "invalid_request", 'batch body must be {"ops": [...]}')
        if len(raw_ops) > _MAX_BATCH_OPS:
            raise HttpError(400, "invalid_request", f"a batch carries at most {_MAX_BATCH_OPS} ops")
        ops, positions, refused = parse_ops(raw_ops)
        # The exchange has a trace of its own; each op that carries its transaction's
        # trace context is linked from it, and its own span joins that trace.
        links = [Link(_op_context(op), {"twopc.gtid": op.gtid}) for op in ops if op.traceparent]
        with self._span(request, "batch", links) as span:
            run_op = None
            if span.is_recording():
                span.set_attribute("twopc.batch.ops", len(raw_ops))
                span.set_attribute("http.response.status_code", 200)
                run_op = self._traced_op_runner(span)
            if NDJSON in request.headers.get("Accept", ""):
                return await self._stream_batch(request, ops, positions, refused, run_op)
            results: list[dict[str, Any]] = [{}] * len(raw_ops)
            for position, answer in refused:
                results[position] = answer

            def settle(index: int, result: BatchResult) -> None:
                results[positions[index]] = encode_result(result)

            await self._handler.batch(ops, settle, run_op)
        return json_response({"results": results})

    def _traced_op_runner(self, batch_span: trace.Span) -> Callable[[BatchOp], Awaitable[BatchResult]]:
        """Runs each op of a batch in a span of its own: in its transaction's trace when
        the op carries one (linked to the batch's span), else under the batch's span."""
        batch_link = [Link(batch_span.get_span_context())]

        async def run(op: BatchOp) -> BatchResult:
            if op.traceparent:
                parent, kind, links = _op_parent(op), SpanKind.SERVER, batch_link
            else:
                parent, kind, links = None, SpanKind.INTERNAL, []
            with self._tracer.start_as_current_span(
                f"twopc.participant.{op.op}", context=parent, kind=kind, links=links
            ) as span:
                _describe(span, op.op, op)
                result = await self._handler.run_op(op)
                _annotate(span, op.op, result)
            return result

        return run

    async def _stream_batch(
        self,
        request: web.Request,
        ops: list[BatchOp],
        positions: list[int],
        refused: list[tuple[int, dict[str, Any]]],
        run_op: Callable[[BatchOp], Awaitable[BatchResult]] | None,
    ) -> web.StreamResponse:
        """Answer a batch as NDJSON, one ``{"index", "result"}`` line per op as it is done.

        A prepare that waits for a lock must not hold back the answers of the others:
        one of them may be the vote that lets the coordinator release that lock. Most
        batches are answered in one burst, though (their ops share a group commit):
        such a batch goes out as one plain response, headers and body in one write,
        since every write wakes the coordinator.
        """
        answered: asyncio.Queue[tuple[int, dict[str, Any]]] = asyncio.Queue()
        for answer in refused:
            answered.put_nowait(answer)

        def settle(index: int, result: BatchResult) -> None:
            answered.put_nowait((positions[index], encode_result(result)))

        work = asyncio.create_task(self._handler.batch(ops, settle, run_op))
        remaining = len(ops) + len(refused)
        if not remaining:
            await work
            return web.Response(body=b"", headers={"Content-Type": NDJSON})
        ready = await _next_answers(answered)
        remaining -= len(ready)
        if not remaining:
            await work
            return web.Response(body=_ndjson(ready), headers={"Content-Type": NDJSON})
        response = web.StreamResponse(headers={"Content-Type": NDJSON})
        await response.prepare(request)
        try:
            while remaining:
                await response.write(_ndjson(ready))
                ready = await _next_answers(answered)
                remaining -= len(ready)
        except (ConnectionError, RuntimeError):
            # The coordinator went away: the ops still finish, as they would have alone.
            await work
            raise
        await work
        await response.write_eof(_ndjson(ready))  # the last lines and the end in one write
        return response

    def _verify(self, request: web.Request, operation: str, body: bytes) -> None:
        try:
            verify(
                self._secret,
                operation,
                body,
                request.headers.get(TIMESTAMP_HEADER),
                request.headers.get(SIGNATURE_HEADER),
                now=self._clock(),
            )
        except SignatureError as exc:
            self._rejections.refused(
                "protocol call refused", str(exc), operation=operation, peer=request.remote or "unknown"
            )
            raise HttpError(401, "unauthorized", str(exc)) from None

    @contextlib.contextmanager
    def _span(self, request: web.Request, operation: str, links: Sequence[Link] = ()) -> Iterator[trace.Span]:
        # Extracting costs a header parse, so only when a caller sent trace context.
        context = propagate.extract(request.headers) if "traceparent" in request.headers else None
        with self._tracer.start_as_current_span(
            f"twopc.participant.{operation}", context=context, kind=SpanKind.SERVER, links=links
        ) as span:
            if span.is_recording():
                span.set_attributes(_http_attributes(request))
            yield span


_W3C = TraceContextTextMapPropagator()


def _op_parent(op: BatchOp) -> otel_context.Context:
    """The trace context a batch op carries, as a parent."""
    return _W3C.extract({"traceparent": op.traceparent or ""})


def _op_context(op: BatchOp) -> trace.SpanContext:
    return trace.get_current_span(_op_parent(op)).get_span_context()


def _http_attributes(request: web.Request) -> dict[str, Any]:
    """The HTTP server attributes of OpenTelemetry's semantic conventions."""
    route = request.match_info.route.resource
    attributes: dict[str, Any] = {
        "http.request.method": request.method,
        "url.path": request.path,
        "url.scheme": request.scheme,
        "server.address": request.host.rsplit(":", 1)[0],
    }
    if route is not None:
        attributes["http.route"] = route.canonical
    return attributes


def _describe(span: trace.Span, operation: str, message: Any) -> None:
    """The request's transaction on its span."""
    branch = getattr(message, "branch", "")
    span.set_attribute("twopc.gtid", getattr(message, "gtid", ""))
    span.set_attribute("twopc.branch", branch)
    span.set_attribute("twopc.participant", branch)  # a branch is named after its participant
    if getattr(message, "one_phase", False):
        span.set_attribute("twopc.one_phase", True)


def _annotate(span: trace.Span, operation: str, answer: Any) -> None:
    """What the participant answered, on the span: its vote, or the outcome."""
    if isinstance(answer, PrepareResponse):
        span.set_attribute("twopc.vote", answer.vote.value)
    elif isinstance(answer, OutcomeResponse):
        span.set_attribute("twopc.outcome", answer.status.value)
    elif isinstance(answer, StatusResponse):
        span.set_attribute("twopc.status", answer.status.value)
    elif isinstance(answer, BaseException):
        span.set_status(trace.StatusCode.ERROR, describe(answer))


async def _next_answers(answered: asyncio.Queue[tuple[int, dict[str, Any]]]) -> list[tuple[int, dict[str, Any]]]:
    """Wait for one answer, then take whatever else is done too."""
    ready = [await answered.get()]
    while not answered.empty():
        ready.append(answered.get_nowait())
    return ready


def _ndjson(answers: list[tuple[int, dict[str, Any]]]) -> bytes:
    return b"".join(orjson.dumps({"index": i, "result": r}) + b"\n" for i, r in answers)


def build_protocol_app(
    handler: BranchHandler,
    *,
    secret: str,
    clock: Callable[[], float],
    tracer: trace.Tracer,
    middlewares: Iterable[Middleware] = (),
    max_body_bytes: int = MAX_BODY_BYTES,
    rejections: RejectionLog | None = None,
) -> web.Application:
    """The protocol's routes. ``max_body_bytes`` bounds each request (413 as JSON beyond),
    whatever the ``client_max_size`` of the application this one is mounted in; a call
    refused for its signature is logged to ``rejections``."""
    protocol = _Protocol(handler, secret, clock, tracer, max_body_bytes, rejections or RejectionLog(""))
    # The error edge first, so it is outermost and turns any error below it into JSON.
    app = web.Application(middlewares=[error_middleware(PARTICIPANT_ERRORS, service="the participant"), *middlewares])
    app.router.add_post("/prepare", protocol.route("prepare", PrepareRequest, handler.prepare))
    app.router.add_post("/commit", protocol.route("commit", CommitRequest, handler.commit))
    app.router.add_post("/abort", protocol.route("abort", AbortRequest, handler.abort))
    app.router.add_post("/status", protocol.route("status", StatusRequest, handler.status))
    # An operator's heuristic outcome, signed with the same secret (the operator has it).
    app.router.add_post("/force", protocol.route("force", ForceRequest, handler.force_request))
    app.router.add_post("/batch", protocol.batch)
    return app
