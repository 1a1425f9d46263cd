"""The branch's SQL as spans under the participant's: the protocol's statements and
the handler's own, their text without the values; none outside a trace."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pg_harness import NAME, items_handler

from adapters.postgres import PostgresResource
from adapters.postgres import resource as pg_resource
from tests.conftest import RecordSpans


@pytest.fixture
def provider(record_spans: RecordSpans) -> tuple[TracerProvider, InMemorySpanExporter]:
    return record_spans(pg_resource)


@pytest.fixture
async def resource(database: str) -> AsyncIterator[PostgresResource]:
    pg = PostgresResource(database, NAME, handler=items_handler, pool_size=2, control_pool_size=1)
    await pg.start()
    yield pg
    await pg.close()


async def test_a_traced_branch_shows_each_statement_without_its_values(
    provider: tuple[TracerProvider, InMemorySpanExporter], resource: PostgresResource
) -> None:
    tracer_provider, memory = provider
    tracer = tracer_provider.get_tracer("participant")
    with tracer.start_as_current_span("twopc.participant.prepare") as prepare:
        await resource.prepare("g1", NAME, {"id": "a", "note": "secret note"})
    with tracer.start_as_current_span("twopc.participant.commit") as commit:
        await resource.commit("g1", NAME)

    spans = [
        s
        for s in memory.get_finished_spans()
        if s.name not in ("twopc.participant.prepare", "twopc.participant.commit")
    ]
    by_name = {s.name: s for s in spans}
    assert list(by_name) == ["BEGIN", "INSERT", "PREPARE TRANSACTION", "COMMIT PREPARED"]
    for span in spans:
        assert span.kind is trace.SpanKind.CLIENT
        assert span.attributes is not None
        assert span.attributes["db.system"] == "postgresql"
        assert span.attributes["db.operation"] == span.name
        assert "secret note" not in str(span.attributes["db.query.text"])
        assert "g1" not in str(span.attributes["db.query.text"])  # the gid is a value too
    parents = {s.name: s.parent.span_id if s.parent else None for s in spans}
    prepare_id, commit_id = prepare.get_span_context().span_id, commit.get_span_context().span_id
    assert parents == {
        "BEGIN": prepare_id,
        "INSERT": prepare_id,
        "PREPARE TRANSACTION": prepare_id,
        "COMMIT PREPARED": commit_id,
    }
    assert by_name["PREPARE TRANSACTION"].attributes["twopc.gtid"] == "g1"
    assert by_name["COMMIT PREPARED"].attributes["db.query.text"] == "COMMIT PREPARED $1"


async def test_outside_a_trace_the_branch_makes_no_span(
    provider: tuple[TracerProvider, InMemorySpanExporter], resource: PostgresResource
) -> None:
    _, memory = provider
    await resource.prepare("g2", NAME, {"id": "b", "note": "plain"})
    await resource.commit("g2", NAME)

    assert memory.get_finished_spans() == ()
