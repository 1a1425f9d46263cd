"""Forwarding to another replica over HTTPS: trusted through the cluster's CA file; a
replica whose certificate does not verify is a retryable 503, not a crash."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from coordinator.api._forward import FORWARDED_BY, Forwarder
from coordinator.config import ClusterSettings
from tests.conftest import TlsFiles
from twopc_core.http import error_middleware
from twopc_core.serving import serving
from twopc_core.tls import server_context


@contextlib.asynccontextmanager
async def https_replica(tls_files: TlsFiles) -> AsyncIterator[str]:
    """A replica that answers every request with who forwarded it."""

    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"forwarded_by": request.headers.get(FORWARDED_BY), "path": request.path})

    replica = web.Application()
    replica.router.add_route("*", "/{tail:.*}", answer)
    context = server_context(tls_files.server_cert, tls_files.server_key)
    async with serving(replica, "127.0.0.1", 0, ssl_context=context) as site:
        yield f"https://localhost:{site.port}"


@contextlib.asynccontextmanager
async def forwarding_to(replica_url: str, cluster: ClusterSettings) -> AsyncIterator[TestClient]:
    forwarder = Forwarder("c1", timeout=5.0, ssl_context=cluster.client_ssl())

    async def forward(request: web.Request) -> web.Response:
        return await forwarder.forward(request, replica_url)

    app = web.Application(middlewares=[error_middleware(service="the coordinator")])
    app.router.add_get("/v1/transactions/{gtid}", forward)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()
        await forwarder.close()


async def test_a_request_is_forwarded_to_an_https_replica_trusted_through_the_cluster_ca(tls_files: TlsFiles) -> None:
    async with https_replica(tls_files) as url, forwarding_to(url, ClusterSettings(ca_file=tls_files.ca)) as client:
        response = await client.get("/v1/transactions/g1")
        assert response.status == 200
        assert await response.json() == {"forwarded_by": "c1", "path": "/v1/transactions/g1"}


async def test_a_replica_whose_certificate_does_not_verify_is_a_retryable_503(tls_files: TlsFiles) -> None:
    cluster = ClusterSettings(ca_file=tls_files.other_ca)
    async with https_replica(tls_files) as url, forwarding_to(url, cluster) as client:
        response = await client.get("/v1/transactions/g1")
        assert response.status == 503
        assert (await response.json())["error"]["code"] == "replica_unavailable"
