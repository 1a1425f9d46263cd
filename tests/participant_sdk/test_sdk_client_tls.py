"""The SDK's coordinator client over TLS: it trusts the CA it is given, presents a client
certificate to a coordinator that requires one, fails clearly on a certificate that does
not verify; and the participant's inquiries go over the TLS it is given."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from participant_sdk import Participant
from participant_sdk.client import CoordinatorClient
from participant_sdk.testing import InMemoryResource, StubCoordinator
from tests.conftest import TlsFiles
from twopc_core.serving import serving
from twopc_core.tls import TlsConfigError, client_context, server_context


@contextlib.asynccontextmanager
async def https_stub(tls_files: TlsFiles, client_ca: Path | None = None) -> AsyncIterator[tuple[StubCoordinator, str]]:
    stub = StubCoordinator()
    context = server_context(tls_files.server_cert, tls_files.server_key, client_ca)
    async with serving(stub.app(), "127.0.0.1", 0, ssl_context=context) as site:
        yield stub, f"https://127.0.0.1:{site.port}"


async def test_the_client_trusts_the_ca_file_it_is_given(tls_files: TlsFiles) -> None:
    async with https_stub(tls_files) as (stub, url), CoordinatorClient(url, ca_file=tls_files.ca) as client:
        stub.decide("g1", "committed")
        assert (await client.get("g1"))["outcome"] == "committed"


async def test_a_client_trusting_another_ca_fails_on_the_certificate(tls_files: TlsFiles) -> None:
    async with https_stub(tls_files) as (stub, url), CoordinatorClient(url, ca_file=tls_files.other_ca) as client:
        stub.decide("g1", "committed")
        with pytest.raises(aiohttp.ClientConnectorCertificateError, match="certificate verify failed"):
            await client.get("g1")
        assert stub.inquiries == []


async def test_the_client_presents_its_certificate_to_a_coordinator_that_requires_one(tls_files: TlsFiles) -> None:
    async with https_stub(tls_files, client_ca=tls_files.ca) as (stub, url):
        stub.decide("g1", "aborted")
        certified = CoordinatorClient(
            url, ca_file=tls_files.ca, cert_file=tls_files.client_cert, key_file=tls_files.client_key
        )
        async with certified:
            assert (await certified.get("g1"))["outcome"] == "aborted"
        async with CoordinatorClient(url, ca_file=tls_files.ca) as anonymous:
            with pytest.raises(aiohttp.ClientError):
                await anonymous.get("g1")


async def test_a_session_passed_in_gets_the_tls_context_too(tls_files: TlsFiles) -> None:
    async with https_stub(tls_files) as (stub, url), aiohttp.ClientSession() as session:
        stub.decide("g1", "committed")
        client = CoordinatorClient(url, session, ssl=client_context(tls_files.ca))
        assert (await client.get("g1"))["outcome"] == "committed"


def test_a_context_and_files_together_are_refused(tls_files: TlsFiles) -> None:
    with pytest.raises(ValueError, match="not both"):
        CoordinatorClient("https://127.0.0.1:1", ca_file=tls_files.ca, ssl=client_context(tls_files.ca))


def test_a_missing_ca_file_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(TlsConfigError, match=r"missing\.pem"):
        CoordinatorClient("https://127.0.0.1:1", ca_file=tmp_path / "missing.pem")


async def test_the_participant_inquires_over_the_tls_it_is_given(tls_files: TlsFiles, tmp_path: Path) -> None:
    resource = InMemoryResource()
    async with https_stub(tls_files) as (stub, url):
        participant = Participant(
            name="p1",
            resource=resource,
            secret="s",
            coordinator_url=url,
            log_path=tmp_path / "p.db",
            inquiry_interval=60.0,
            coordinator_ssl=client_context(tls_files.ca),
        )
        async with participant:
            await participant.resource.prepare("g1", "p1", None)
            await participant.sweep()  # the log learns of the prepared branch
            stub.decide("g1", "committed", branches=["p1"])
            settled = await participant.resolve_in_doubt()
        assert stub.inquiries == ["g1"]
        assert settled.committed == 1
        assert ("g1", "p1") in resource.committed
