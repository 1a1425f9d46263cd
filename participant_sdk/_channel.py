"""The participant channel on aiohttp: the coordinator's frames answered by the edge.

Each frame is handed to :class:`~participant_sdk._edge.ProtocolEdge` as the HTTP
request it stands for (the same body, signature, ``Accept`` and ``traceparent``), and
what the edge answers goes back as answer frames (see :mod:`twopc_core.channel`). So a
call over the channel is checked, run, traced and answered exactly as over HTTP; only
the HTTP around it is saved. Frames run concurrently, as separate requests would.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

import orjson
import structlog
from aiohttp import WSMsgType, web

from participant_sdk._edge import JSON_TYPE, Call, ProtocolEdge, error_answer
from twopc_core.channel import SUBPROTOCOL, FrameError, Request, decode_request, encode_answer, frame_operation
from twopc_core.http import HttpError
from twopc_core.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER

__all__ = ["Channels"]

logger = structlog.get_logger("participant_sdk")

#: What a frame may carry beyond the largest body the edge takes: its head.
_HEAD_ALLOWANCE = 64 * 1024


class _FrameSink:
    """The edge's answer to one frame, as answer frames."""

    def __init__(self, ws: web.WebSocketResponse, frame_id: int) -> None:
        self._ws = ws
        self._id = frame_id
        self._status = 200
        self._type = JSON_TYPE
        self.started = False

    async def whole(self, status: int, body: bytes, content_type: str) -> None:
        self.started = True
        await self._ws.send_bytes(encode_answer(self._id, status, content_type, body, end=True))

    async def begin(self, status: int, content_type: str) -> None:
        # Nothing to send yet: the status and type go with the first chunk.
        self.started = True
        self._status, self._type = status, content_type

    async def chunk(self, data: bytes, *, last: bool) -> None:
        await self._ws.send_bytes(encode_answer(self._id, self._status, self._type, data, end=last))


class Channels:
    """The channels open on one edge: opened by signed handshakes, closed at shutdown."""

    def __init__(self, edge: ProtocolEdge) -> None:
        self._edge = edge
        self._open: weakref.WeakSet[web.WebSocketResponse] = weakref.WeakSet()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """``GET {prefix}/channel``: a 401 unless signed, else the channel until it closes."""
        attributes = _attributes(request)
        nonce = self._edge.open_channel(request.headers, attributes["client.address"])
        ws = web.WebSocketResponse(
            protocols=(SUBPROTOCOL,), max_msg_size=self._edge.max_body_bytes + _HEAD_ALLOWANCE, heartbeat=None
        )
        if not ws.can_prepare(request).ok:
            raise HttpError(400, "bad_request", f"the channel is a WebSocket with the subprotocol {SUBPROTOCOL}")
        await ws.prepare(request)
        self._open.add(ws)
        running: set[asyncio.Task[None]] = set()
        last_id = -1
        try:
            async for message in ws:
                if message.type is not WSMsgType.BINARY:
                    await ws.close(code=1003, message=b"frames are binary")
                    break
                try:
                    frame = decode_request(message.data)
                except FrameError as exc:
                    await ws.close(code=1002, message=str(exc).encode()[:120])
                    break
                if frame.frame_id <= last_id:
                    # A frame's id is part of what it signs: a repeated one is a replay.
                    await ws.close(code=1002, message=b"frame ids must increase")
                    break
                last_id = frame.frame_id
                task = asyncio.create_task(self._answer(ws, nonce, frame, attributes))
                running.add(task)
                task.add_done_callback(running.discard)
        finally:
            # The coordinator went away: the calls still finish, as they would over HTTP.
            if running:
                await asyncio.gather(*running, return_exceptions=True)
        return ws

    async def close(self, _app: web.Application | None = None) -> None:
        """Close every open channel (at shutdown: an open one would hold it up)."""
        await asyncio.gather(*(ws.close(code=1001, message=b"shutting down") for ws in list(self._open)))

    async def _answer(self, ws: web.WebSocketResponse, nonce: str, frame: Request, attributes: dict[str, Any]) -> None:
        headers = {TIMESTAMP_HEADER: frame.timestamp or "", SIGNATURE_HEADER: frame.signature or ""}
        if frame.accept is not None:
            headers["Accept"] = frame.accept
        if frame.traceparent is not None:
            headers["traceparent"] = frame.traceparent
        call = Call(
            frame.operation,
            frame.body,
            headers,
            attributes,
            signed_as=frame_operation(nonce, frame.frame_id, frame.operation),
        )
        sink = _FrameSink(ws, frame.frame_id)
        try:
            self._edge.check_size(None, len(frame.body))
            await self._edge.answer(call, sink)
        except Exception as exc:
            if not sink.started:
                await self._answer_error(sink, exc)
            elif not isinstance(exc, (ConnectionError, RuntimeError)):  # not the channel closing
                logger.exception("channel answer failed", operation=frame.operation)

    @staticmethod
    async def _answer_error(sink: _FrameSink, exc: BaseException) -> None:
        status, body = error_answer(exc)
        if status >= 500 and not isinstance(exc, HttpError):
            logger.error("protocol call failed", error=repr(exc))
        try:
            await sink.whole(status, orjson.dumps(body), JSON_TYPE)
        except (ConnectionError, RuntimeError):
            pass  # the channel is gone: the coordinator fails the call itself


def _attributes(request: web.Request) -> dict[str, Any]:
    """The HTTP server attributes of the upgrade request, for every frame's span."""
    return {
        "http.request.method": "POST",
        "url.path": request.path,
        "url.scheme": request.scheme,
        "server.address": request.host.rsplit(":", 1)[0],
        "client.address": request.remote or "unknown",
        "network.protocol.name": "websocket",
    }
