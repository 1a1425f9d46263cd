"""The participant protocol's HTTP edge, whatever server it is mounted on.

One implementation of what a protocol request comes to: its signature checked (a
refusal logged, rate-limited), its body parsed, the branch handler called, the answer
encoded (a batch as one JSON body or NDJSON op by op), its span made; and the one table
(:data:`PARTICIPANT_ERRORS`) by which the SDK's domain errors become HTTP answers. The
mounts (:mod:`participant_sdk._http` for aiohttp, :mod:`participant_sdk._asgi` for
Starlette, FastAPI and any ASGI server) only hand it a :class:`Call` and send what it
gives their :class:`Sink`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
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
from twopc_core.channel import channel_operation
from twopc_core.failpoints import FailpointError
from twopc_core.http import (
    DomainErrors,
    HttpError,
    domain_answer,
    error_body,
    invalid_body,
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
from twopc_core.signing import (
    NONCE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    ReplayGuard,
    SignatureError,
    verify,
)

__all__ = [
    "JSON_TYPE",
    "MAX_BODY_BYTES",
    "NDJSON",
    "OPERATIONS",
    "PARTICIPANT_ERRORS",
    "Call",
    "ProtocolEdge",
    "Sink",
    "encode_result",
    "error_answer",
    "parse_ops",
]

JSON_TYPE = "application/json"

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


# -- what a mount hands over, and where the answer goes ----------------------------------------


@dataclass(frozen=True)
class Call:
    """A protocol request as a mount received it: the operation (the path's last
    segment), the body, and the headers (looked up case-insensitively)."""

    operation: str
    body: bytes
    headers: Mapping[str, str]
    #: The HTTP server attributes of OpenTelemetry's semantic conventions, for the span.
    http_attributes: dict[str, Any] = field(default_factory=dict)
    #: What the signature covers besides the body, when not the operation alone (a
    #: channel's frame, see :func:`twopc_core.channel.frame_operation`).
    signed_as: str | None = None


class Sink(Protocol):
    """Where a mount sends an answer: whole, or as a stream of chunks (NDJSON)."""

    async def whole(self, status: int, body: bytes, content_type: str) -> None:
        """Send the whole answer, headers and body in one write."""

    async def begin(self, status: int, content_type: str) -> None:
        """Send the headers of an answer whose body follows in chunks."""

    async def chunk(self, data: bytes, *, last: bool) -> None:
        """Send a part of the body; ``last`` ends it (in the same write)."""


def error_answer(exc: BaseException, service: str = "the participant") -> tuple[int, dict[str, Any]]:
    """The status and JSON body an error raised by :meth:`ProtocolEdge.answer` is
    answered with, as :func:`twopc_core.http.error_middleware` answers it on aiohttp."""
    if isinstance(exc, HttpError):
        return exc.status, exc.body()
    if isinstance(exc, ValidationError):
        invalid = invalid_body(exc)
        return invalid.status, invalid.body()
    known = domain_answer(PARTICIPANT_ERRORS, exc)
    if known is not None:
        return known[0], error_body(known[1], str(exc), getattr(exc, "details", None))
    return 500, error_body("internal", f"{service} failed to handle this request")


# -- the edge ---------------------------------------------------------------------------------


class ProtocolEdge:
    """The protocol's operations over one :class:`BranchHandler`, for any mount."""

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
        self.max_body_bytes = max_body_bytes
        self._clock = clock
        self._tracer = tracer
        #: Channel handshakes' nonces: each opens one channel, once.
        self._handshakes = ReplayGuard()
        self._calls: dict[str, tuple[type[BaseModel], Callable[[Any], Awaitable[BaseModel]]]] = {
            "prepare": (PrepareRequest, handler.prepare),
            "commit": (CommitRequest, handler.commit),
            "abort": (AbortRequest, handler.abort),
            "status": (StatusRequest, handler.status),
            # An operator's heuristic outcome, signed with the same secret (the operator has it).
            "force": (ForceRequest, handler.force_request),
        }

    async def answer(self, call: Call, sink: Sink) -> None:
        """Answer ``call`` into ``sink``; an error before anything was sent is raised
        (the mount answers it, see :func:`error_answer`), a 404 for an unknown operation."""
        if call.operation == "batch":
            await self._batch(call, sink)
            return
        known = self._calls.get(call.operation)
        if known is None:
            raise HttpError(404, "not_found", f"no protocol operation {call.operation!r}")
        model, handle = known
        self._verify(call)
        try:
            message = model.model_validate_json(call.body)
        except ValidationError as exc:
            raise invalid_body(exc, what=f"the {call.operation} request", status=400) from None
        with self._span(call, call.operation) as span:
            if span.is_recording():
                _describe(span, call.operation, message)
            answer = await handle(message)
            if span.is_recording():
                _annotate(span, call.operation, answer)
                span.set_attribute("http.response.status_code", 200)
        await sink.whole(200, orjson.dumps(answer.model_dump(mode="json")), JSON_TYPE)

    def check_size(self, declared: int | None, received: int) -> None:
        """Refuse (413) a body over the limit: by its declared length before reading, or
        by what was received so far."""
        if declared is not None and declared > self.max_body_bytes:
            raise HttpError(
                413, "body_too_large", f"the body is {declared} bytes; at most {self.max_body_bytes} are taken"
            )
        if received > self.max_body_bytes:
            raise HttpError(413, "body_too_large", f"the body is over {self.max_body_bytes} bytes")

    async def _batch(self, call: Call, sink: Sink) -> None:
        self._verify(call)
        try:
            message = orjson.loads(call.body)
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
        with self._span(call, "batch", links) as span:
            run_op = None
            if span.is_recording():
                span.set_attribute("twopc.batch.ops", len(raw_ops))
                span.set_attribute("http.response.status_code", 200)
                run_op = self._traced_op_runner(span)
            if NDJSON in call.headers.get("Accept", ""):
                await self._stream_batch(sink, ops, positions, refused, run_op)
                return
            results: list[dict[str, Any]] = [{}] * len(raw_ops)
            for position, answer in refused:
                results[position] = answer

            def settle(index: int, result: BatchResult) -> None:
                results[positions[index]] = encode_result(result)

            await self._handler.batch(ops, settle, run_op)
        await sink.whole(200, orjson.dumps({"results": results}), JSON_TYPE)

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
        sink: Sink,
        ops: list[BatchOp],
        positions: list[int],
        refused: list[tuple[int, dict[str, Any]]],
        run_op: Callable[[BatchOp], Awaitable[BatchResult]] | None,
    ) -> None:
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
            await sink.whole(200, b"", NDJSON)
            return
        ready = await _next_answers(answered)
        remaining -= len(ready)
        if not remaining:
            await work
            await sink.whole(200, _ndjson(ready), NDJSON)
            return
        await sink.begin(200, NDJSON)
        try:
            while remaining:
                await sink.chunk(_ndjson(ready), last=False)
                ready = await _next_answers(answered)
                remaining -= len(ready)
        except (ConnectionError, RuntimeError):
            # The coordinator went away: the ops still finish, as they would have alone.
            await work
            raise
        await work
        await sink.chunk(_ndjson(ready), last=True)  # the last lines and the end in one write

    def open_channel(self, headers: Mapping[str, str], peer: str) -> str:
        """Check a channel's handshake (signed, fresh, its nonce never seen); return
        the nonce its frames' signatures name. A refusal is a 401, logged."""
        nonce = headers.get(NONCE_HEADER) or ""
        try:
            verify(
                self._secret,
                channel_operation(nonce),
                b"",
                headers.get(TIMESTAMP_HEADER),
                headers.get(SIGNATURE_HEADER),
                now=self._clock(),
            )
            if not nonce:
                raise SignatureError("the channel's handshake has no nonce")
            self._handshakes.check(nonce, now=self._clock())
        except SignatureError as exc:
            self._rejections.refused("protocol channel refused", str(exc), operation="channel", peer=peer)
            raise HttpError(401, "unauthorized", str(exc)) from None
        return nonce

    def _verify(self, call: Call) -> None:
        try:
            verify(
                self._secret,
                call.signed_as or call.operation,
                call.body,
                call.headers.get(TIMESTAMP_HEADER),
                call.headers.get(SIGNATURE_HEADER),
                now=self._clock(),
            )
        except SignatureError as exc:
            peer = call.http_attributes.get("client.address", "unknown")
            self._rejections.refused("protocol call refused", str(exc), operation=call.operation, peer=peer)
            raise HttpError(401, "unauthorized", str(exc)) from None

    @contextlib.contextmanager
    def _span(self, call: Call, operation: str, links: Sequence[Link] = ()) -> Iterator[trace.Span]:
        # Extracting costs a header parse, so only when a caller sent trace context.
        context = propagate.extract(call.headers) if "traceparent" in call.headers else None
        with self._tracer.start_as_current_span(
            f"twopc.participant.{operation}", context=context, kind=SpanKind.SERVER, links=links
        ) as span:
            if span.is_recording():
                span.set_attributes(call.http_attributes)
            yield span


#: The operations a mount routes (each a POST to ``{prefix}/{operation}``).
OPERATIONS = ("prepare", "commit", "abort", "status", "force", "batch")


_W3C = TraceContextTextMapPropagator()


def _op_parent(op: BatchOp) -> otel_context.Context:
    """The trace context a batch op carries, as a parent."""
    return _W3C.extract({"traceparent": op.traceparent or ""})


def _op_context(op: BatchOp) -> trace.SpanContext:
    return trace.get_current_span(_op_parent(op)).get_span_context()


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
