"""How a twopc service serves its aiohttp application: over TLS where configured, with
limits that keep slow or abusive clients from exhausting it.

aiohttp has no deadline for a request's head or its body: a client that sends its headers
a byte at a time holds a connection until the keep-alive timeout, and enough such
clients hold the whole server. Here (:class:`ServerLimits`):

- a connection must deliver a complete request head within ``header_timeout`` of opening,
  and of the first byte of each later head; past it, it is answered 408 and closed;
- a request's body must arrive within ``body_timeout`` of its head; past it, a handler
  reading the body gets a 408 (answered as JSON by the service's error edge) and the
  connection is closed after the answer;
- beyond ``max_connections`` open connections a new one is answered 503 and closed at
  once, while the open ones go on.

The limits live in a subclass of aiohttp's ``RequestHandler`` (the protocol of one
connection), which reads some of that class's state; the tests of this module pin the
behaviour, so an aiohttp upgrade that changes it fails them rather than the servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

from twopc_core.http import error_body

__all__ = ["KEEPALIVE_TIMEOUT", "GuardedAppRunner", "GuardedRequestHandler", "ServerLimits", "serving"]

#: How long an idle keep-alive connection stays open (aiohttp's run_app default).
KEEPALIVE_TIMEOUT = 75.0


@dataclass(frozen=True)
class ServerLimits:
    """What one server allows a connection (seconds, and connections at once)."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_connections: int = 1024

    def __post_init__(self) -> None:
        if self.header_timeout <= 0 or self.body_timeout <= 0:
            raise ValueError("header_timeout and body_timeout must be positive")
        if self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")


def _raw_answer(status: int, reason: str, code: str, message: str) -> bytes:
    """A whole HTTP/1.1 answer that closes the connection, for where no handler runs."""
    body = orjson.dumps(error_body(code, message))
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


class GuardedRequestHandler(RequestHandler):
    """One connection's protocol, with the deadlines and the admission of :class:`ServerLimits`."""

    __slots__ = ("_admitted", "_body", "_body_timer", "_guard", "_head_timer", "_limits")

    def __init__(self, manager: _GuardedServer, *, limits: ServerLimits, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = manager
        self._limits = limits
        self._admitted = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        #: The body being received, while it has a deadline.
        self._body: StreamReader | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._guard.admit():
            # aiohttp never sees this connection: it costs no task and no parser state.
            message = f"this server takes at most {self._limits.max_connections} connections at once; retry"
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(_raw_answer(503, "Service Unavailable", "too_many_connections", message))
            transport.close()
            return
        self._admitted = True
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self._admitted:
            return
        self._admitted = False
        self._guard.release()
        self._cancel_head_timer()
        self._cancel_body_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._admitted:
            return
        heads_before = self._request_count
        super().data_received(data)
        if self._upgraded or self._payload_parser is not None:
            self._cancel_head_timer()  # a WebSocket, say: no longer HTTP requests to time
            return
        if self._request_count > heads_before:
            # A head is complete; its body (if any) now has a deadline of its own.
            self._cancel_head_timer()
            if self._messages:
                self._watch_body(self._messages[-1][1])
        if self._body is not None and self._body.is_eof():
            self._cancel_body_timer()
        if self._body is None and self._head_timer is None and self._request_count == heads_before and data:
            self._arm_head_timer()  # the first bytes of the next request's head

    # -- the head --------------------------------------------------------------------

    def _arm_head_timer(self) -> None:
        loop = asyncio.get_running_loop()
        self._head_timer = loop.call_later(self._limits.header_timeout, self._head_expired)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_expired(self) -> None:
        self._head_timer = None
        # While a request is being answered, a 408 written now would cut into its answer.
        if self.transport is not None and not self._request_in_progress:
            message = f"the request head did not arrive within {self._limits.header_timeout:g}s"
            self.transport.write(_raw_answer(408, "Request Timeout", "request_timeout", message))
        self.force_close()

    # -- the body --------------------------------------------------------------------

    def _watch_body(self, payload: StreamReader) -> None:
        self._cancel_body_timer()
        if payload.is_eof():
            return
        self._body = payload
        loop = asyncio.get_running_loop()
        self._body_timer = loop.call_later(self._limits.body_timeout, self._body_expired)

    def _cancel_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        self._body = None

    def _body_expired(self) -> None:
        self._body_timer = None
        payload, self._body = self._body, None
        if payload is None or payload.is_eof():
            return
        if not self._request_in_progress:
            self.force_close()  # queued behind another request, or its handler is done
            return
        # The handler may be reading the body: it gets the 408 to answer. aiohttp would
        # then wait for the rest of the body (lingering); without that it closes the
        # connection after the answer.
        self._lingering_time = 0.0
        payload.set_exception(
            web.HTTPRequestTimeout(reason=f"the request body did not arrive within {self._limits.body_timeout:g}s")
        )


class _GuardedServer(web.Server):
    """aiohttp's server (the protocol factory), making guarded handlers and counting them."""

    def __init__(
        self,
        handler: Any,
        *,
        limits: ServerLimits,
        request_factory: Any,
        handler_cancellation: bool = False,
        **handler_options: Any,
    ) -> None:
        super().__init__(handler, request_factory=request_factory, handler_cancellation=handler_cancellation)
        self._limits = limits
        self._handler_options = handler_options
        self._serving_loop = asyncio.get_running_loop()
        #: Connections admitted and not yet lost.
        self.open_connections = 0

    def admit(self) -> bool:
        if self.open_connections >= self._limits.max_connections:
            return False
        self.open_connections += 1
        return True

    def release(self) -> None:
        self.open_connections -= 1

    def __call__(self) -> RequestHandler:
        return GuardedRequestHandler(self, limits=self._limits, loop=self._serving_loop, **self._handler_options)


class GuardedAppRunner(web.AppRunner):
    """An ``AppRunner`` whose server applies ``limits`` to every connection.

    ``handler_options`` are aiohttp's ``RequestHandler`` options (``keepalive_timeout``,
    ``access_log``, ...), as ``AppRunner`` takes them.
    """

    def __init__(
        self, app: web.Application, limits: ServerLimits, *, handle_signals: bool = False, **handler_options: Any
    ) -> None:
        super().__init__(app, handle_signals=handle_signals, **handler_options)
        self._limits = limits
        self._handler_options = handler_options

    async def _make_server(self) -> web.Server:
        # The plain server is made for its side effects (the app started up and frozen)
        # and for the app's request handler and factory, which the guarded one takes.
        plain = await super()._make_server()
        return _GuardedServer(
            plain.request_handler,
            limits=self._limits,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            **self._handler_options,
        )


@contextlib.asynccontextmanager
async def serving(
    app: web.Application,
    host: str,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None = None,
    limits: ServerLimits | None = None,
    handle_signals: bool = False,
) -> AsyncIterator[web.TCPSite]:
    """Serve ``app`` on ``host:port`` (HTTPS with ``ssl_context``) while the block runs;
    yields the site (``site.port`` is the port bound, for ``port=0``)."""
    runner = GuardedAppRunner(
        app,
        limits or ServerLimits(),
        handle_signals=handle_signals,
        access_log=None,
        keepalive_timeout=KEEPALIVE_TIMEOUT,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
        await site.start()
        yield site
    finally:
        await runner.cleanup()
