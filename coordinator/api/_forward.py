"""Requests about a transaction another live replica holds are forwarded to it.

Any replica takes any request; the one whose memory holds the transaction answers it
(the engine's :meth:`~coordinator.engine.Coordinator.locate` says which). A forwarded
request carries :data:`FORWARDED_BY`, and is answered where it lands, never forwarded
again, so two replicas that disagree for a moment about who holds what cannot bounce a
request between them. A replica that does not answer makes the request a retryable 503.
"""

from __future__ import annotations

import ssl

import aiohttp
from aiohttp import web

from twopc_core.http import HttpError
from twopc_core.signing import NONCE_HEADER, PARTICIPANT_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER

__all__ = ["FORWARDED_BY", "Forwarder"]

#: Set on a forwarded request: the node id of the replica that forwarded it.
FORWARDED_BY = "X-Twopc-Forwarded-By"

#: What a forwarded request keeps of the client's headers.
#: The replica it goes to authenticates the caller again, so the credentials go too.
_REQUEST_HEADERS = (
    "Content-Type",
    "Accept",
    "Idempotency-Key",
    "traceparent",
    "tracestate",
    "Authorization",
    PARTICIPANT_HEADER,
    NONCE_HEADER,
    TIMESTAMP_HEADER,
    SIGNATURE_HEADER,
)
#: What the client gets of the answering replica's headers, besides the body.
_RESPONSE_HEADERS = ("Idempotent-Replayed",)


class Forwarder:
    """Sends a request on to another replica and hands its answer back as it is.

    ``ssl_context``: the TLS of forwards to an ``https://`` replica (None: the system's CAs).
    """

    def __init__(self, node_id: str, timeout: float, ssl_context: ssl.SSLContext | None = None) -> None:
        self._node_id = node_id
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._ssl: ssl.SSLContext | bool = ssl_context or True
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @staticmethod
    def forwarded(request: web.Request) -> bool:
        return FORWARDED_BY in request.headers

    async def forward(self, request: web.Request, replica_url: str) -> web.Response:
        if self.forwarded(request):
            # The replica that sent it thought it was ours; one hop is all a request gets.
            raise HttpError(503, "not_held_here", "the transaction is held by another replica; retry")
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout, connector=aiohttp.TCPConnector(ssl=self._ssl))
        headers = {name: request.headers[name] for name in _REQUEST_HEADERS if name in request.headers}
        headers[FORWARDED_BY] = self._node_id
        try:
            async with self._session.request(
                request.method, replica_url + request.path_qs, data=await request.read(), headers=headers
            ) as answer:
                body = await answer.read()
                kept = {name: answer.headers[name] for name in _RESPONSE_HEADERS if name in answer.headers}
                return web.Response(
                    status=answer.status, body=body, content_type=answer.content_type, headers=kept or None
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise HttpError(
                503,
                "replica_unavailable",
                f"the replica that holds the transaction did not answer ({type(exc).__name__}); retry",
                {"replica": replica_url},
            ) from None
