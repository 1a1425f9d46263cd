"""The coordinator over HTTPS, every hop: a client that trusts its CA runs a transaction
through it to a participant over HTTPS; a client that trusts another CA fails on the
certificate, saying so."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator
from http.cookies import SimpleCookie
from pathlib import Path

import aiohttp
import pytest

from coordinator.api import build_app
from coordinator.config import Settings
from participant_sdk.client import CoordinatorClient
from tests.conftest import TlsFiles
from tests.coordinator.conftest import SECRET, StubParticipant
from twopc_core.serving import serving
from twopc_core.tls import server_context
from twopc_core.tokens import new_token, token_hash

TOKEN = new_token()
READER_TOKEN = new_token()


@contextlib.asynccontextmanager
async def https_coordinator(tls_files: TlsFiles, tmp_path: Path) -> AsyncIterator[tuple[str, StubParticipant]]:
    stub = StubParticipant("p1")
    participant_tls = server_context(tls_files.server_cert, tls_files.server_key)
    async with serving(stub.app(), "127.0.0.1", 0, ssl_context=participant_tls) as participant:
        settings = Settings(
            log={"path": tmp_path / "coordinator.db"},
            server={"tls_cert_file": tls_files.server_cert, "tls_key_file": tls_files.server_key},
            auth={
                "tokens": [
                    {"name": "tester", "sha256": token_hash(TOKEN), "roles": ["client"]},
                    {"name": "reader", "sha256": token_hash(READER_TOKEN), "roles": ["reader"]},
                ]
            },
            participants=[
                {
                    "name": "p1",
                    "url": f"https://127.0.0.1:{participant.port}/twopc",
                    "secret": SECRET,
                    "ca_file": tls_files.ca,
                }
            ],
        )
        app = build_app(settings)
        async with serving(app, "127.0.0.1", 0, ssl_context=settings.server.ssl_context()) as site:
            yield f"https://localhost:{site.port}", stub


async def test_a_client_trusting_the_ca_commits_through_the_coordinator_over_https(
    tls_files: TlsFiles, tmp_path: Path
) -> None:
    async with https_coordinator(tls_files, tmp_path) as (url, stub):
        async with CoordinatorClient(url, ca_file=tls_files.ca, token=TOKEN) as client:
            view = await client.execute([{"name": "p1", "payload": {"n": 1}}])
        assert view["outcome"] == "committed"
        assert stub.committed == {view["gtid"]}


async def test_a_client_trusting_another_ca_fails_on_the_certificate(tls_files: TlsFiles, tmp_path: Path) -> None:
    async with https_coordinator(tls_files, tmp_path) as (url, stub):
        async with CoordinatorClient(url, ca_file=tls_files.other_ca, token=TOKEN) as client:
            with pytest.raises(aiohttp.ClientConnectorCertificateError, match="certificate verify failed"):
                await client.execute([{"name": "p1"}])
        assert stub.calls == []


async def test_the_admin_pages_session_cookie_is_secure_over_https(tls_files: TlsFiles, tmp_path: Path) -> None:
    async with https_coordinator(tls_files, tmp_path) as (url, _):
        ssl_context = ssl.create_default_context(cafile=str(tls_files.ca))
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{url}/ui/login", data={"token": READER_TOKEN}, ssl=ssl_context, allow_redirects=False
            ) as response:
                assert response.status == 303
                cookie = SimpleCookie(response.headers["Set-Cookie"])["twopc_session"]
        assert cookie["secure"] is True and cookie["httponly"] is True and cookie["samesite"] == "Strict"
