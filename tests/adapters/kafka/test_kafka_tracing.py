"""A Kafka branch's work as PRODUCER spans under the participant's: staging at
prepare, publishing at commit, with the transactional id and the topics."""

from __future__ import annotations

import pytest
from kafka_harness import EventsService
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from adapters.kafka import resource as kafka_resource
from tests.conftest import RecordSpans


@pytest.fixture
def provider(record_spans: RecordSpans) -> tuple[TracerProvider, InMemorySpanExporter]:
    return record_spans(kafka_resource)


async def test_stage_and_publish_are_spans_of_the_branch_with_the_transactional_id_and_topics(
    provider: tuple[TracerProvider, InMemorySpanExporter], events: EventsService, topic: str
) -> None:
    tracer_provider, memory = provider
    tracer = tracer_provider.get_tracer("participant")
    payload = {"messages": [{"topic": topic, "key": "k1", "value": {"n": 1}}]}
    with tracer.start_as_current_span("twopc.participant.prepare") as prepare:
        result = await events.resource.prepare("g1", events.name, payload)
    with tracer.start_as_current_span("twopc.participant.commit") as commit:
        await events.resource.commit("g1", events.name)
    await events.resource.prepare("g2", events.name, payload)  # outside a trace: no span

    assert result.vote.value == "yes"
    spans = {s.name: s for s in memory.get_finished_spans() if s.name.startswith("kafka ")}
    assert set(spans) == {"kafka stage", "kafka publish"}
    stage, publish = spans["kafka stage"], spans["kafka publish"]
    assert stage.parent is not None and stage.parent.span_id == prepare.get_span_context().span_id
    assert publish.parent is not None and publish.parent.span_id == commit.get_span_context().span_id
    shard = events.resource.shard_of("g1")
    for span in (stage, publish):
        assert span.kind is trace.SpanKind.PRODUCER
        assert span.attributes is not None
        assert span.attributes["messaging.system"] == "kafka"
        assert span.attributes["messaging.kafka.transactional_id"] == f"{events.name}-{shard}"
        assert span.attributes["twopc.gtid"] == "g1"
        assert span.attributes["twopc.participant"] == events.name
    assert stage.attributes["messaging.destination.name"] == events.resource.settings.topic
    assert set(publish.attributes["twopc.kafka.topics"]) == {topic, events.resource.settings.topic}
    assert publish.attributes["messaging.batch.message_count"] == 1
