"""A client's trace continues through the coordinator: the request's ``traceparent``
becomes the parent of everything the coordinator does for it, calls to participants
included (a batch exchange carries the trace of the call that opened it)."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler
from opentelemetry import context, propagate, trace

from twopc_core import telemetry

__all__ = ["tracing_middleware"]

tracer = trace.get_tracer("coordinator.api")


@web.middleware
async def tracing_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if "traceparent" not in request.headers and not telemetry.records_root_spans():
        # Nothing would record this request's span: only its ids are needed, for the
        # participants' calls to carry (a tenth of the coordinator's CPU otherwise).
        token = context.attach(trace.set_span_in_context(telemetry.unrecorded_root_span()))
        try:
            return await handler(request)
        finally:
            context.detach(token)
    parent = propagate.extract(request.headers)
    token = context.attach(parent)
    try:
        with tracer.start_as_current_span(f"{request.method} {request.path}", kind=trace.SpanKind.SERVER):
            return await handler(request)
    finally:
        context.detach(token)
