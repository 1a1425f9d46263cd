"""The participant protocol as an ASGI application: mount it in FastAPI or Starlette.

    app = FastAPI(lifespan=participant.lifespan)
    app.mount("/twopc", participant.asgi())

Everything the protocol does over HTTP is :mod:`participant_sdk._edge`'s, as on
aiohttp; this module only reads an ASGI request into a
:class:`~participant_sdk._edge.Call` and sends the edge's answer (errors as the same
JSON bodies). It needs no ASGI library: any ASGI 3 server or framework can host it.

Starlette and FastAPI do not pass lifespan events to a mounted application, so the
participant starts and stops with the embedding application's lifespan
(:meth:`Participant.lifespan`); served on its own (``uvicorn``), this application
handles the lifespan events itself when told to.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import AbstractAsyncContextManager
from typing import Any

import orjson
import structlog
from multidict import CIMultiDict, CIMultiDictProxy

from participant_sdk._edge import JSON_TYPE, OPERATIONS, Call, ProtocolEdge, error_answer
from twopc_core.http import HttpError

__all__ = ["ASGIApp", "ProtocolASGI", "Receive", "Scope", "Send"]

logger = structlog.get_logger("participant_sdk")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
#: What ASGI 3 calls an application.
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class _AsgiSink:
    """The edge's answer as ASGI messages."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False

    async def whole(self, status: int, body: bytes, content_type: str) -> None:
        headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
        self.started = True
        await self._send({"type": "http.response.start", "status": status, "headers": headers})
        await self._send({"type": "http.response.body", "body": body, "more_body": False})

    async def begin(self, status: int, content_type: str) -> None:
        self.started = True
        headers = [(b"content-type", content_type.encode())]
        await self._send({"type": "http.response.start", "status": status, "headers": headers})

    async def chunk(self, data: bytes, *, last: bool) -> None:
        await self._send({"type": "http.response.body", "body": data, "more_body": not last})


class ProtocolASGI:
    """The protocol's operations, each a ``POST {mount}/{operation}``, as ASGI.

    ``lifespan``: what to enter on the ``lifespan`` start-up event and leave on
    shut-down, when this application is served on its own (a mounted one never hears
    those events).
    """

    def __init__(
        self,
        edge: ProtocolEdge,
        lifespan: Callable[[], AbstractAsyncContextManager[Any]] | None = None,
    ) -> None:
        self._edge = edge
        self._lifespan = lifespan

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._serve_lifespan(receive, send)
            return
        if scope["type"] != "http":  # websockets: not part of the protocol
            return
        sink = _AsgiSink(send)
        try:
            call = await self._read(scope, receive)
            await self._edge.answer(call, sink)
        except Exception as exc:
            if sink.started:
                raise  # part of the answer went out: nothing sensible to add to it
            status, body = error_answer(exc)
            if status == 500:
                logger.exception("internal error", path=scope.get("path"))
            await sink.whole(status, orjson.dumps(body), JSON_TYPE)

    async def _read(self, scope: Scope, receive: Receive) -> Call:
        operation = _operation(scope)
        if operation not in OPERATIONS:
            raise HttpError(404, "not_found", f"no protocol operation at {scope.get('path')!r}")
        if scope["method"] != "POST":
            raise HttpError(405, "method_not_allowed", f"{scope['method']} {operation}: the protocol takes POST")
        headers = CIMultiDictProxy(
            CIMultiDict((name.decode("latin-1"), value.decode("latin-1")) for name, value in scope["headers"])
        )
        declared = headers.get("Content-Length")
        self._edge.check_size(int(declared) if declared and declared.isdigit() else None, 0)
        body = b"".join([part async for part in _body_parts(receive, self._edge)])
        return Call(operation, body, headers, _http_attributes(scope, headers, operation))

    async def _serve_lifespan(self, receive: Receive, send: Send) -> None:
        running: AbstractAsyncContextManager[Any] | None = None
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    if self._lifespan is not None:
                        running = self._lifespan()
                        await running.__aenter__()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if running is not None:
                    await running.__aexit__(None, None, None)
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _body_parts(receive: Receive, edge: ProtocolEdge) -> AsyncIterator[bytes]:
    """The request body's parts, refused (413) once they pass the edge's limit."""
    received = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionResetError("the client went away before its request was read")
        part = message.get("body", b"")
        received += len(part)
        edge.check_size(None, received)
        yield part
        if not message.get("more_body", False):
            return


def _operation(scope: Scope) -> str:
    """The path below the mount point (Starlette keeps the whole path and sets
    ``root_path`` to the mount's; other hosts strip the prefix themselves)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path.strip("/")


def _http_attributes(scope: Scope, headers: CIMultiDictProxy[str], operation: str) -> dict[str, Any]:
    """The HTTP server attributes of OpenTelemetry's semantic conventions."""
    root: str = scope.get("root_path", "")
    path: str = scope["path"]
    server = scope.get("server")
    client = scope.get("client")
    host = server[0] if server else headers.get("Host", "").rsplit(":", 1)[0]
    return {
        "http.request.method": scope["method"],
        "url.path": path if path.startswith(root) else root + path,
        "url.scheme": scope.get("scheme", "http"),
        "server.address": host,
        "client.address": client[0] if client else "unknown",
        "http.route": f"{root}/{operation}",
    }
