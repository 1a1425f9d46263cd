"""The participant protocol mounted on aiohttp: a sub-application over the edge.

Everything the protocol does over HTTP is :mod:`participant_sdk._edge`'s; this module
only reads an aiohttp request into a :class:`~participant_sdk._edge.Call` and writes
the edge's answer back; ``GET {prefix}/channel`` serves the same calls as frames
(:mod:`participant_sdk._channel`). Errors reach :func:`twopc_core.http.error_middleware` with
:data:`PARTICIPANT_ERRORS` (through the application's own middlewares, as exceptions).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web

from participant_sdk._channel import Channels
from participant_sdk._edge import OPERATIONS, PARTICIPANT_ERRORS, Call, ProtocolEdge
from twopc_core.channel import CHANNEL_PATH
from twopc_core.http import Middleware, error_middleware, read_body

__all__ = ["protocol_app"]


class _ResponseSink:
    """The edge's answer as aiohttp's response: built whole, or streamed as it comes."""

    def __init__(self, request: web.Request) -> None:
        self._request = request
        self.response: web.StreamResponse | None = None

    async def whole(self, status: int, body: bytes, content_type: str) -> None:
        self.response = web.Response(status=status, body=body, headers={"Content-Type": content_type})

    async def begin(self, status: int, content_type: str) -> None:
        self.response = web.StreamResponse(status=status, headers={"Content-Type": content_type})
        await self.response.prepare(self._request)

    async def chunk(self, data: bytes, *, last: bool) -> None:
        assert self.response is not None, "begin() comes first"
        if last:
            await self.response.write_eof(data)
        else:
            await self.response.write(data)


def _http_attributes(request: web.Request) -> dict[str, Any]:
    """The HTTP server attributes of OpenTelemetry's semantic conventions."""
    route = request.match_info.route.resource
    attributes: dict[str, Any] = {
        "http.request.method": request.method,
        "url.path": request.path,
        "url.scheme": request.scheme,
        "server.address": request.host.rsplit(":", 1)[0],
        "client.address": request.remote or "unknown",
    }
    if route is not None:
        attributes["http.route"] = route.canonical
    return attributes


def _route(edge: ProtocolEdge, operation: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        body = await read_body(request, edge.max_body_bytes)
        sink = _ResponseSink(request)
        await edge.answer(Call(operation, body, request.headers, _http_attributes(request)), sink)
        assert sink.response is not None, "the edge answers every call it does not raise for"
        return sink.response

    return handle


def protocol_app(edge: ProtocolEdge, middlewares: Iterable[Middleware] = ()) -> web.Application:
    """The aiohttp sub-application of ``edge``'s operations. Each request's body is
    bounded by the edge's ``max_body_bytes`` (413 as JSON beyond), whatever the
    ``client_max_size`` of the application this one is mounted in."""
    # The error edge first, so it is outermost and turns any error below it into JSON.
    app = web.Application(middlewares=[error_middleware(PARTICIPANT_ERRORS, service="the participant"), *middlewares])
    for operation in OPERATIONS:
        app.router.add_post(f"/{operation}", _route(edge, operation))
    # The same operations as frames over one WebSocket, for a coordinator that asks.
    channels = Channels(edge)
    app.router.add_get(f"/{CHANNEL_PATH}", channels.handle)
    app.on_shutdown.append(channels.close)
    return app
