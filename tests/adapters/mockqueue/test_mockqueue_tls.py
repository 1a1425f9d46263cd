"""The mock queue served over HTTPS, reaching an https coordinator, and bounding bodies."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
from mockqueue_harness import NAME, SECRET, QueueService

from adapters.mockqueue.service import PARTICIPANT, build_app
from coordinator.config import ParticipantSettings
from coordinator.transport import Backoff, Transport
from participant_sdk.testing import StubCoordinator
from tests.conftest import TlsFiles
from twopc_core.protocol import Outcome, Vote
from twopc_core.serving import serving
from twopc_core.tls import client_context, server_context


@contextlib.asynccontextmanager
async def https_stub_coordinator(tls_files: TlsFiles) -> AsyncIterator[tuple[StubCoordinator, str]]:
    stub = StubCoordinator()
    context = server_context(tls_files.server_cert, tls_files.server_key)
    async with serving(stub.app(), "127.0.0.1", 0, ssl_context=context) as site:
        yield stub, f"https://127.0.0.1:{site.port}"


async def test_the_queue_over_https_votes_commits_and_inquires_over_https(tls_files: TlsFiles, tmp_path: Path) -> None:
    async with https_stub_coordinator(tls_files) as (stub, coordinator_url):
        app = build_app(
            NAME, tmp_path / "queue", coordinator_url, SECRET, 60.0, coordinator_ssl=client_context(tls_files.ca)
        )
        context = server_context(tls_files.server_cert, tls_files.server_key)
        async with serving(app, "127.0.0.1", 0, ssl_context=context) as site:
            base = f"https://127.0.0.1:{site.port}"
            settings = ParticipantSettings(name=NAME, url=f"{base}/twopc", secret=SECRET, ca_file=tls_files.ca)
            transport = Transport([settings], Backoff(0.01, 0.05), phase_two_timeout=2.0)
            await transport.start()
            try:
                assert (await transport.prepare(NAME, "g1", {"items": [1]}, deadline=4e9, timeout=5))[0] is Vote.YES
                assert (await transport.prepare(NAME, "g2", {"items": [2]}, deadline=4e9, timeout=5))[0] is Vote.YES
                assert (await transport.deliver(NAME, "g1", Outcome.COMMITTED)).status is Outcome.COMMITTED
            finally:
                await transport.close()
            # g2 is in doubt: the queue asks the coordinator, over TLS, and commits it.
            stub.decide("g2", "committed", branches=[NAME])
            settled = await app[PARTICIPANT].resolve_in_doubt()
            assert stub.inquiries == ["g2"]
            assert settled.committed == 1
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{base}/queue/items", ssl=client_context(tls_files.ca)) as response:
                    items = orjson.loads(await response.read())["items"]
            assert [(item["gtid"], item["value"]) for item in items] == [("g1", 1), ("g2", 2)]


async def test_bodies_over_the_limit_are_answered_413_as_json(
    tmp_path: Path, coordinator: tuple[StubCoordinator, str]
) -> None:
    queue = await QueueService(tmp_path / "queue", coordinator[1]).start(max_body_bytes=2048)
    try:
        status, body = await queue.prepare("g1", ["x" * 4096])
        assert (status, body["error"]["code"]) == (413, "body_too_large")
        status, body = await queue.set_faults(crash_on="x" * 4096)
        assert (status, body["error"]["code"]) == (413, "body_too_large")
        assert (await queue.prepare("g2", ["small"]))[0] == 200
    finally:
        await queue.stop()
