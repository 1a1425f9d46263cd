"""The transport over TLS: an https:// participant is trusted through its CA file, a
certificate that does not verify is a no vote (never a crash), and a participant that
requires a client certificate gets the one configured."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from coordinator.config import ParticipantSettings
from coordinator.transport import Backoff, Transport
from tests.conftest import TlsFiles
from tests.coordinator.conftest import SECRET, StubParticipant
from twopc_core.protocol import Outcome, Vote
from twopc_core.serving import serving
from twopc_core.tls import server_context


@contextlib.asynccontextmanager
async def https_participant(tls_files: TlsFiles, client_ca: Path | None = None) -> AsyncIterator[StubParticipant]:
    stub = StubParticipant("p1")
    context = server_context(tls_files.server_cert, tls_files.server_key, client_ca)
    async with serving(stub.app(), "127.0.0.1", 0, ssl_context=context) as site:
        stub.url = f"https://127.0.0.1:{site.port}/twopc"
        yield stub


@contextlib.asynccontextmanager
async def transport_to(stub: StubParticipant, **tls: Any) -> AsyncIterator[Transport]:
    settings = ParticipantSettings(name="p1", url=stub.url, secret=SECRET, **tls)
    transport = Transport([settings], Backoff(0.01, 0.05), phase_two_timeout=1.0)
    await transport.start()
    try:
        yield transport
    finally:
        await transport.close()


async def test_a_participant_over_https_trusted_through_its_ca_votes_and_commits(tls_files: TlsFiles) -> None:
    async with https_participant(tls_files) as stub, transport_to(stub, ca_file=tls_files.ca) as transport:
        vote, reason = await transport.prepare("p1", "g1", {"x": 1}, deadline=4e9, timeout=2)
        assert (vote, reason) == (Vote.YES, None)
        assert (await transport.deliver("p1", "g1", Outcome.COMMITTED)).status is Outcome.COMMITTED
        assert stub.committed == {"g1"}


async def test_a_participant_whose_certificate_does_not_verify_is_a_no_vote(tls_files: TlsFiles) -> None:
    async with https_participant(tls_files) as stub, transport_to(stub, ca_file=tls_files.other_ca) as transport:
        vote, reason = await transport.prepare("p1", "g1", None, deadline=4e9, timeout=2)
        assert vote is Vote.NO
        assert reason is not None and "certificate verify failed" in reason.lower()
        assert transport.health("p1")["status"] == "unreachable"
        assert stub.calls == []


async def test_a_participant_that_requires_a_client_certificate_gets_the_configured_one(tls_files: TlsFiles) -> None:
    async with https_participant(tls_files, client_ca=tls_files.ca) as stub:
        certified = {"ca_file": tls_files.ca, "cert_file": tls_files.client_cert, "key_file": tls_files.client_key}
        async with transport_to(stub, **certified) as transport:
            assert (await transport.prepare("p1", "g1", None, deadline=4e9, timeout=2))[0] is Vote.YES
        async with transport_to(stub, ca_file=tls_files.ca) as transport:
            assert (await transport.prepare("p1", "g2", None, deadline=4e9, timeout=2))[0] is Vote.NO
        assert [body["gtid"] for body in stub.ops("prepare")] == ["g1"]
