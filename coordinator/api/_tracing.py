"""A client's trace continues through the coordinator: the request's ``traceparent``
becomes the parent of everything the coordinator does for it, calls to participants
included (a batch exchange, which carries several transactions, is linked to each).

The request's SERVER span has the HTTP attributes of OpenTelemetry's semantic
conventions; the engine adds the transaction's gtid and outcome to it."""

from __future__ import annotations

from typing import Any

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
    route = _route(request)
    with tracer.start_as_current_span(
        f"{request.method} {route}" if route else request.method,
        context=propagate.extract(request.headers),
        kind=trace.SpanKind.SERVER,
    ) as span:
        if span.is_recording():
            span.set_attributes(_attributes(request, route))
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # an answer too, raised
            _answered(span, exc.status)
            raise
        _answered(span, response.status)
        return response


def _route(request: web.Request) -> str | None:
    """The matched route's template (``/v1/transactions/{gtid}/commit``): low cardinality."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else None


def _attributes(request: web.Request, route: str | None) -> dict[str, Any]:
    host, _, port = request.host.rpartition(":") if ":" in request.host else (request.host, "", "")
    attributes: dict[str, Any] = {
        "http.request.method": request.method,
        "url.path": request.path,
        "url.scheme": request.scheme,
        "server.address": host,
        "network.protocol.version": f"{request.version.major}.{request.version.minor}",
    }
    if port.isdigit():
        attributes["server.port"] = int(port)
    if route:
        attributes["http.route"] = route
    if request.remote:
        attributes["client.address"] = request.remote
    if "User-Agent" in request.headers:
        attributes["user_agent.original"] = request.headers["User-Agent"]
    return attributes


def _answered(span: trace.Span, status: int) -> None:
    if span.is_recording():
        span.set_attribute("http.response.status_code", status)
        if status >= 500:  # a server span's error is the server's failure, not the client's
            span.set_status(trace.StatusCode.ERROR)
            span.set_attribute("error.type", str(status))
