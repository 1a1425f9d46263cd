"""The participant protocol over HTTP: signatures, JSON in and out, error bodies, spans."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import orjson
import structlog
from aiohttp import web
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind
from pydantic import BaseModel, ValidationError

from participant_sdk._core import BranchHandler, describe_validation_error
from participant_sdk.errors import ParticipantError, error_body
from twopc_core.failpoints import FailpointError
from twopc_core.protocol import AbortRequest, CommitRequest, PrepareRequest, StatusRequest
from twopc_core.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, SignatureError, verify

__all__ = ["build_protocol_app", "json_response"]

logger = structlog.get_logger("participant_sdk")

_MAX_BATCH_OPS = 10_000

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]


#: The media type of a batch answered op by op.
NDJSON = "application/x-ndjson"


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def _error(status: int, code: str, message: str, details: Any = None) -> web.Response:
    return json_response(error_body(code, message, details), status)


_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every answer of the protocol app is JSON, errors included."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, _CODES.get(exc.status, f"http_{exc.status}"), exc.reason)
    except asyncio.CancelledError:
        raise
    except Exception:
        logger.exception("participant handler failed", path=request.path)
        return _error(500, "internal_error", "unexpected error in the participant")


class _Protocol:
    def __init__(
        self,
        handler: BranchHandler,
        secret: str,
        clock: Callable[[], float],
        tracer: trace.Tracer,
    ) -> None:
        self._handler = handler
        self._secret = secret
        self._clock = clock
        self._tracer = tracer

    def route(
        self, operation: str, model: type[BaseModel], call: Callable[[Any], Awaitable[BaseModel]]
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            body = await request.read()
            refusal = self._refuse(request, operation, body)
            if refusal is not None:
                return refusal
            try:
                message = model.model_validate_json(body)
            except ValidationError as exc:
                return _invalid(operation, exc)
            with self._span(request, operation) as span:
                if span.is_recording():
                    span.set_attribute("twopc.gtid", message.gtid)  # type: ignore[attr-defined]
                    span.set_attribute("twopc.branch", message.branch)  # type: ignore[attr-defined]
                try:
                    answer = await call(message)
                except ParticipantError as exc:
                    return _error(exc.status, exc.code, exc.message, exc.details)
                except FailpointError as exc:
                    return _error(503, "failpoint", str(exc))
            return json_response(answer.model_dump(mode="json"))

        return handle

    async def batch(self, request: web.Request) -> web.Response:
        body = await request.read()
        refusal = self._refuse(request, "batch", body)
        if refusal is not None:
            return refusal
        try:
            message = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return _error(400, "invalid_json", f"batch body is not JSON: {exc}")
        ops = message.get("ops") if isinstance(message, dict) else None
        if not isinstance(ops, list) or set(message) != {"ops"}:
            return _error(400, "invalid_request", 'batch body must be {"ops": [...]}')
        if len(ops) > _MAX_BATCH_OPS:
            return _error(400, "invalid_request", f"a batch carries at most {_MAX_BATCH_OPS} ops")
        with self._span(request, "batch") as span:
            if span.is_recording():
                span.set_attribute("twopc.batch.ops", len(ops))
            if NDJSON in request.headers.get("Accept", ""):
                return await self._stream_batch(request, ops)
            results = await self._handler.batch(ops)
        return json_response({"results": results})

    async def _stream_batch(self, request: web.Request, ops: list[Any]) -> web.StreamResponse:
        """Answer a batch as NDJSON, one ``{"index", "result"}`` line per op as it is done.

        A prepare that waits for a lock must not hold back the answers of the others:
        one of them may be the vote that lets the coordinator release that lock. Most
        batches are answered in one burst, though (their ops share a group commit):
        such a batch goes out as one plain response, headers and body in one write,
        since every write wakes the coordinator.
        """
        answered: asyncio.Queue[tuple[int, dict[str, Any]]] = asyncio.Queue()
        work = asyncio.create_task(self._handler.batch(ops, lambda i, r: answered.put_nowait((i, r))))
        ready = await _next_answers(answered)
        remaining = len(ops) - len(ready)
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

    def _refuse(self, request: web.Request, operation: str, body: bytes) -> web.Response | None:
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
            return _error(401, "unauthorized", str(exc))
        return None

    def _span(self, request: web.Request, operation: str) -> Any:
        # Extracting costs a header parse, so only when a caller sent trace context.
        context = propagate.extract(request.headers) if "traceparent" in request.headers else None
        return self._tracer.start_as_current_span(
            f"twopc.participant.{operation}", context=context, kind=SpanKind.SERVER
        )


async def _next_answers(answered: asyncio.Queue[tuple[int, dict[str, Any]]]) -> list[tuple[int, dict[str, Any]]]:
    """Wait for one answer, then take whatever else is done too."""
    ready = [await answered.get()]
    while not answered.empty():
        ready.append(answered.get_nowait())
    return ready


def _ndjson(answers: list[tuple[int, dict[str, Any]]]) -> bytes:
    return b"".join(orjson.dumps({"index": i, "result": r}) + b"\n" for i, r in answers)


def _invalid(operation: str, exc: ValidationError) -> web.Response:
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    if any(error["type"] == "json_invalid" for error in errors):
        return _error(400, "invalid_json", f"{operation} body is not JSON")
    return _error(
        400,
        "invalid_request",
        f"invalid {operation} request: {describe_validation_error(exc)}",
        errors,
    )


def build_protocol_app(
    handler: BranchHandler,
    *,
    secret: str,
    clock: Callable[[], float],
    tracer: trace.Tracer,
    middlewares: Iterable[Middleware] = (),
) -> web.Application:
    protocol = _Protocol(handler, secret, clock, tracer)
    # Ours first, so it is outermost and turns any error below it into JSON.
    app = web.Application(middlewares=[_json_errors, *middlewares])
    app.router.add_post("/prepare", protocol.route("prepare", PrepareRequest, handler.prepare))
    app.router.add_post("/commit", protocol.route("commit", CommitRequest, handler.commit))
    app.router.add_post("/abort", protocol.route("abort", AbortRequest, handler.abort))
    app.router.add_post("/status", protocol.route("status", StatusRequest, handler.status))
    app.router.add_post("/batch", protocol.batch)
    return app
