"""TLS contexts: a server serves HTTPS, a client trusts only the CA it is given, mutual
TLS asks for a client certificate, and bad files are refused naming the file."""

from __future__ import annotations

import ssl
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import TlsFiles
from twopc_core.serving import serving
from twopc_core.tls import TlsConfigError, client_context, server_context


def app() -> web.Application:
    async def ping(_: web.Request) -> web.Response:
        return web.json_response({"pong": True})

    app = web.Application()
    app.router.add_get("/ping", ping)
    return app


async def get(url: str, context: ssl.SSLContext) -> int:
    async with aiohttp.ClientSession() as session, session.get(url, ssl=context) as response:
        return response.status


async def test_a_client_trusting_the_ca_reaches_the_server_over_https(tls_files: TlsFiles) -> None:
    context = server_context(tls_files.server_cert, tls_files.server_key)
    async with serving(app(), "127.0.0.1", 0, ssl_context=context) as site:
        assert await get(f"https://127.0.0.1:{site.port}/ping", client_context(tls_files.ca)) == 200
        assert await get(f"https://localhost:{site.port}/ping", client_context(tls_files.ca)) == 200


async def test_a_client_trusting_another_ca_is_refused_by_certificate_verification(tls_files: TlsFiles) -> None:
    context = server_context(tls_files.server_cert, tls_files.server_key)
    async with serving(app(), "127.0.0.1", 0, ssl_context=context) as site:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await get(f"https://127.0.0.1:{site.port}/ping", client_context(tls_files.other_ca))


async def test_with_a_client_ca_the_server_requires_a_client_certificate(tls_files: TlsFiles) -> None:
    context = server_context(tls_files.server_cert, tls_files.server_key, client_ca_file=tls_files.ca)
    async with serving(app(), "127.0.0.1", 0, ssl_context=context) as site:
        url = f"https://127.0.0.1:{site.port}/ping"
        with pytest.raises(aiohttp.ClientError):
            await get(url, client_context(tls_files.ca))
        assert await get(url, client_context(tls_files.ca, tls_files.client_cert, tls_files.client_key)) == 200


def test_a_missing_ca_file_is_refused_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "ca.pem"
    with pytest.raises(TlsConfigError, match=r"CA file .*nowhere/ca\.pem.* does not exist"):
        client_context(missing)


def test_a_ca_file_that_is_not_pem_is_refused_naming_it(tmp_path: Path) -> None:
    garbage = tmp_path / "ca.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(TlsConfigError, match=r"ca\.pem.* holds no PEM CA certificate"):
        client_context(garbage)


def test_a_server_key_that_does_not_match_its_certificate_is_refused(tls_files: TlsFiles) -> None:
    with pytest.raises(TlsConfigError, match="do not load as a PEM pair"):
        server_context(tls_files.server_cert, tls_files.client_key)


def test_a_client_key_without_its_certificate_is_refused(tls_files: TlsFiles) -> None:
    with pytest.raises(TlsConfigError, match="needs its certificate"):
        client_context(tls_files.ca, key_file=tls_files.client_key)
