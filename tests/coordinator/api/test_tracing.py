"""The coordinator's spans of one transaction: the request's, its rounds', its
participant exchanges'; a commit answered before phase 2 ends leaves its round open
until the last acknowledgement, and ends it then."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from coordinator.api import _tracing
from coordinator.engine import _driver, _rounds
from coordinator.transport import _endpoint
from tests.coordinator.conftest import Harness
from twopc_core import telemetry
from twopc_core.testing import wait_until

TWO = [{"name": "p1", "payload": {"n": 1}}, {"name": "p2", "payload": {"n": 2}}]


@pytest.fixture
def exporter(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """The coordinator's spans, recorded here whatever provider the process installed."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    for module in (_tracing, _driver, _rounds, _endpoint):
        monkeypatch.setattr(module, "tracer", provider.get_tracer(module.__name__))
    monkeypatch.setattr(telemetry, "_records_roots", True)
    yield memory
    provider.shutdown()


def spans(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


async def test_a_commit_answered_before_phase_two_ends_still_ends_its_round_under_the_request(
    harness: Harness, exporter: InMemorySpanExporter
) -> None:
    harness.participants["p1"].mode = "hang_commit"  # phase 2 to p1 unanswered for now
    status, body = await harness.call("POST", "/v1/transactions:execute", json={"participants": TWO})
    assert status == 200 and body["outcome"] == "committed"

    [request] = spans(exporter, "POST /v1/transactions:execute")
    assert spans(exporter, "coordinator.commit_round") == []  # still waiting for p1
    harness.participants["p1"].mode = "json"
    [commit_round] = await wait_until(lambda: spans(exporter, "coordinator.commit_round"), timeout=10)

    assert request.attributes is not None
    assert request.attributes["twopc.gtid"] == body["gtid"]
    assert request.attributes["twopc.outcome"] == "committed"
    assert request.attributes["http.route"] == "/v1/transactions:execute"
    assert request.attributes["http.response.status_code"] == 200
    [prepare_round] = spans(exporter, "coordinator.prepare_round")
    [decision] = spans(exporter, "coordinator.force_decision")
    for span in (prepare_round, decision, commit_round):
        assert span.parent is not None and span.parent.span_id == request.context.span_id
        assert span.context.trace_id == request.context.trace_id
    assert commit_round.end_time is not None and request.end_time is not None
    assert commit_round.end_time > request.end_time
    assert prepare_round.attributes is not None and prepare_round.attributes["twopc.vote"] == "yes"
    assert commit_round.attributes is not None and commit_round.attributes["twopc.outcome"] == "committed"
    prepares = spans(exporter, "participant.prepare")
    assert {s.attributes["twopc.participant"] for s in prepares if s.attributes} == {"p1", "p2"}
    assert all(s.parent is not None and s.parent.span_id == prepare_round.context.span_id for s in prepares)
    commits = spans(exporter, "participant.commit")
    assert commits and all(s.parent is not None and s.parent.span_id == commit_round.context.span_id for s in commits)
    # p1's first commit went unanswered (an error span), a retry was acknowledged.
    answered = [s for s in commits if s.attributes and s.attributes.get("twopc.outcome") == "committed"]
    assert {s.attributes["twopc.participant"] for s in answered if s.attributes} == {"p1", "p2"}


async def test_a_no_vote_ends_the_prepare_round_and_begins_the_abort_round(
    harness: Harness, exporter: InMemorySpanExporter
) -> None:
    harness.participants["p2"].vote = "no"
    status, body = await harness.call("POST", "/v1/transactions:execute", json={"participants": TWO})
    assert status == 200 and body["outcome"] == "aborted"

    [abort_round] = await wait_until(lambda: spans(exporter, "coordinator.abort_round"), timeout=10)
    [prepare_round] = spans(exporter, "coordinator.prepare_round")
    assert prepare_round.attributes is not None and prepare_round.attributes["twopc.outcome"] == "aborted"
    assert abort_round.attributes is not None and abort_round.attributes["twopc.outcome"] == "aborted"
    assert spans(exporter, "coordinator.force_decision") == []
    votes = {
        s.attributes["twopc.participant"]: s.attributes.get("twopc.vote")
        for s in spans(exporter, "participant.prepare")
        if s.attributes
    }
    assert votes == {"p1": "yes", "p2": "no"}
