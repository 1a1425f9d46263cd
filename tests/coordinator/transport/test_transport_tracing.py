"""Spans of the participant exchanges: a lone call's span in its transaction's trace,
a batch exchange's in a trace of its own, linked to every transaction it carries."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from aiohttp.test_utils import TestServer
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from coordinator.config import ParticipantSettings
from coordinator.transport import Backoff, Transport, _endpoint
from tests.coordinator.conftest import SECRET, StubParticipant
from twopc_core import telemetry
from twopc_core.protocol import Vote


@pytest.fixture
def exporter(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """Spans the endpoint makes, recorded here whatever provider the process installed."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    monkeypatch.setattr(_endpoint, "tracer", provider.get_tracer("test"))
    monkeypatch.setattr(telemetry, "_records_roots", True)
    yield memory
    provider.shutdown()


@pytest.fixture
async def transport() -> AsyncIterator[tuple[StubParticipant, Transport]]:
    stub = StubParticipant("p1")
    server = TestServer(stub.app())
    await server.start_server()
    stub.url = str(server.make_url("/twopc"))
    settings = ParticipantSettings(name="p1", url=stub.url, secret=SECRET, max_inflight_exchanges=4)
    client = Transport([settings], Backoff(0.01, 0.05), phase_two_timeout=1.0)
    await client.start()
    try:
        yield stub, client
    finally:
        await client.close()
        await server.close()


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


async def test_a_lone_call_is_a_client_span_in_its_transactions_trace(
    exporter: InMemorySpanExporter, transport: tuple[StubParticipant, Transport]
) -> None:
    stub, client = transport
    tracer = TracerProvider().get_tracer("transactions")
    with tracer.start_as_current_span("transaction g1") as transaction:
        vote, _ = await client.prepare("p1", "g1", None, deadline=4e9, timeout=5)

    assert vote is Vote.YES
    [span] = named(exporter, "participant.prepare")
    assert span.kind is trace.SpanKind.CLIENT
    assert span.parent is not None and span.parent.span_id == transaction.get_span_context().span_id
    assert span.context.trace_id == transaction.get_span_context().trace_id
    assert span.attributes is not None
    assert span.attributes["twopc.gtid"] == "g1"
    assert span.attributes["twopc.participant"] == "p1"
    assert span.attributes["twopc.vote"] == "yes"
    assert span.attributes["http.request.method"] == "POST"
    assert span.attributes["http.response.status_code"] == 200
    assert span.attributes["server.address"] == "127.0.0.1"
    assert str(span.attributes["url.full"]).endswith("/twopc/prepare")
    # The participant hears the exchange's span as its parent.
    assert stub.headers[0]["traceparent"].split("-")[2] == format(span.context.span_id, "016x")


async def test_a_batch_exchange_has_a_trace_of_its_own_linked_to_each_transaction(
    exporter: InMemorySpanExporter, transport: tuple[StubParticipant, Transport]
) -> None:
    stub, client = transport
    tracer = TracerProvider().get_tracer("transactions")
    transactions: dict[str, trace.SpanContext] = {}

    async def prepare(gtid: str) -> Vote:
        with tracer.start_as_current_span(f"transaction {gtid}") as span:
            transactions[gtid] = span.get_span_context()
            vote, _ = await client.prepare("p1", gtid, None, deadline=4e9, timeout=5)
            return vote

    # Made in one turn of the loop: the calls share one batch exchange.
    votes = await asyncio.gather(*(prepare(f"g{i}") for i in range(3)))

    assert votes == [Vote.YES] * 3
    assert stub.batches == [3]
    [batch] = named(exporter, "participant.batch")
    assert batch.parent is None
    assert batch.context.trace_id not in {c.trace_id for c in transactions.values()}
    linked = {link.attributes["twopc.gtid"]: link.context for link in batch.links if link.attributes}
    assert {gtid: (c.trace_id, c.span_id) for gtid, c in linked.items()} == {
        gtid: (c.trace_id, c.span_id) for gtid, c in transactions.items()
    }
    assert batch.attributes is not None and batch.attributes["twopc.batch.ops"] == 3
    # Each op carries its own transaction's trace context, for the participant's span of it.
    carried = {op["gtid"]: op["traceparent"] for op in stub.ops("prepare")}
    assert carried == {gtid: f"00-{c.trace_id:032x}-{c.span_id:016x}-01" for gtid, c in transactions.items()}
    assert stub.headers[0]["traceparent"].split("-")[1] == format(batch.context.trace_id, "032x")


async def test_with_nothing_recording_no_span_is_made_and_the_ids_still_travel(
    exporter: InMemorySpanExporter, transport: tuple[StubParticipant, Transport], monkeypatch: pytest.MonkeyPatch
) -> None:
    stub, client = transport
    monkeypatch.setattr(telemetry, "_records_roots", False)
    unrecorded = telemetry.unrecorded_root_span()
    with trace.use_span(unrecorded):
        await client.prepare("p1", "g1", None, deadline=4e9, timeout=5)
        await asyncio.gather(*(client.prepare("p1", f"b{i}", None, deadline=4e9, timeout=5) for i in range(3)))

    assert exporter.get_finished_spans() == ()
    lone, batch = (h["traceparent"].split("-")[1] for h in stub.headers)
    assert lone == format(unrecorded.get_span_context().trace_id, "032x")
    assert batch != lone and int(batch, 16) != 0  # a trace of its own, as when recorded
    assert stub.batches == [3]
    assert all("traceparent" not in op for op in stub.ops("prepare"))
