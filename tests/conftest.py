"""Fixtures shared across the suite: a stub coordinator for participant-side tests,
certificates for the TLS tests (made by trustme, a test dependency only), and spans
recorded in memory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
import trustme
from aiohttp.test_utils import TestServer
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from participant_sdk.testing import StubCoordinator


@pytest.fixture
async def coordinator() -> AsyncIterator[tuple[StubCoordinator, str]]:
    """A stub coordinator answering inquiries as the test decides, and its URL."""
    stub = StubCoordinator()
    server = TestServer(stub.app())
    await server.start_server()
    yield stub, str(server.make_url("")).rstrip("/")
    await server.close()


@pytest.fixture
def stub(coordinator: tuple[StubCoordinator, str]) -> StubCoordinator:
    return coordinator[0]


@pytest.fixture
async def stopped_coordinator() -> str:
    """The URL of a stub coordinator that was started and stopped: it refuses connections,
    as a coordinator replica that is down does."""
    async with StubCoordinator().serve() as url:
        pass
    return url


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for TLS tests: a CA, what it signed, and a CA that signed nothing here."""

    ca: Path
    #: For 127.0.0.1 and localhost: the certificate (with its chain) and its key.
    server_cert: Path
    server_key: Path
    #: A client certificate the CA signed, for mutual TLS.
    client_cert: Path
    client_key: Path
    #: A CA that signed neither certificate: trusting it alone must fail.
    other_ca: Path


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    where = tmp_path_factory.mktemp("tls")
    ca, other = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("client.twopc.test")
    files = TlsFiles(
        ca=where / "ca.pem",
        server_cert=where / "server.pem",
        server_key=where / "server.key",
        client_cert=where / "client.pem",
        client_key=where / "client.key",
        other_ca=where / "other-ca.pem",
    )
    ca.cert_pem.write_to_path(str(files.ca))
    other.cert_pem.write_to_path(str(files.other_ca))
    server.private_key_pem.write_to_path(str(files.server_key))
    client.private_key_pem.write_to_path(str(files.client_key))
    for leaf, path in ((server, files.server_cert), (client, files.client_cert)):
        path.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    return files


#: Makes a module's ``tracer`` record into memory, for the test's duration.
RecordSpans = Callable[[ModuleType], tuple[TracerProvider, InMemorySpanExporter]]


@pytest.fixture
def record_spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[RecordSpans]:
    providers: list[TracerProvider] = []

    def record(module: ModuleType) -> tuple[TracerProvider, InMemorySpanExporter]:
        memory = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(memory))
        monkeypatch.setattr(module, "tracer", provider.get_tracer("test"))
        providers.append(provider)
        return provider, memory

    yield record
    for provider in providers:
        provider.shutdown()
