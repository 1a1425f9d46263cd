"""Failpoints on the participant's steps, and trace context carried into its spans."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sdk_harness import branch_body, prepare_body

from participant_sdk.testing import ParticipantTestServer
from twopc_core import failpoints


async def test_error_after_prepare_is_a_503_and_the_retry_votes_yes_from_the_log(
    harness: ParticipantTestServer,
) -> None:
    failpoints.configure("participant.after_prepare_before_reply=1*error")
    first = await harness.prepare("g1")
    second = await harness.prepare("g1")

    assert first[0] == 503
    assert first[1]["error"]["code"] == "failpoint"
    assert second == (200, {"vote": "yes", "reason": None})
    assert harness.resource.calls_of("prepare") == [("g1", "p1")]


async def test_error_before_commit_is_applied_leaves_the_branch_prepared(harness: ParticipantTestServer) -> None:
    await harness.prepare("g1")
    failpoints.configure("participant.before_commit_applied=1*error")
    status, _ = await harness.call("commit", branch_body("g1"))

    assert status == 503
    assert harness.resource.calls_of("commit") == []
    assert await harness.status("g1") == "prepared"


async def test_error_after_commit_leaves_it_committed_for_the_retry(harness: ParticipantTestServer) -> None:
    await harness.prepare("g1")
    failpoints.configure("participant.after_commit_before_reply=1*error")
    first, _ = await harness.call("commit", branch_body("g1"))
    second = await harness.call("commit", branch_body("g1"))

    assert first == 503
    assert second == (200, {"status": "committed", "reason": None})
    assert harness.resource.calls_of("commit") == [("g1", "p1")]


async def test_traceparent_header_makes_the_span_a_child_of_the_callers(
    harness_factory,
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    harness = await harness_factory().start(tracer_provider=provider)
    trace_id, parent_id = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    try:
        await harness.call(
            "prepare",
            prepare_body("g1"),
            headers={"traceparent": f"00-{trace_id}-{parent_id}-01"},
        )
    finally:
        await harness.stop()

    [span] = exporter.get_finished_spans()
    assert span.name == "twopc.participant.prepare"
    assert format(span.context.trace_id, "032x") == trace_id
    assert span.parent is not None and format(span.parent.span_id, "016x") == parent_id
    assert span.attributes["twopc.gtid"] == "g1"


async def test_a_prepare_span_says_the_transaction_and_the_vote(harness_factory) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    harness = await harness_factory().start(tracer_provider=provider)
    try:
        await harness.call("prepare", prepare_body("g1"))
        await harness.call("commit", branch_body("g1"))
    finally:
        await harness.stop()

    prepare, commit = exporter.get_finished_spans()
    assert prepare.kind is SpanKind.SERVER
    assert prepare.attributes["twopc.gtid"] == "g1"
    assert prepare.attributes["twopc.participant"] == "p1"
    assert prepare.attributes["twopc.vote"] == "yes"
    assert prepare.attributes["http.route"].endswith("/prepare")
    assert prepare.attributes["http.response.status_code"] == 200
    assert commit.attributes["twopc.outcome"] == "committed"


async def test_a_batch_span_links_each_ops_transaction_and_each_op_joins_its_own_trace(harness_factory) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    harness = await harness_factory().start(tracer_provider=provider)
    exchange = "00-11111111111111111111111111111111-2222222222222222-01"
    transactions = {
        "g1": ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"),
        "g2": ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"),
    }
    ops = [
        {"op": "prepare", **prepare_body(gtid), "traceparent": f"00-{trace_id}-{span_id}-01"}
        for gtid, (trace_id, span_id) in transactions.items()
    ]
    ops.append({"op": "prepare", **prepare_body("g3")})  # an op of a transaction nobody traces
    try:
        status, _ = await harness.call("batch", {"ops": ops}, headers={"traceparent": exchange})
    finally:
        await harness.stop()

    assert status == 200
    spans = exporter.get_finished_spans()
    [batch] = [s for s in spans if s.name == "twopc.participant.batch"]
    assert format(batch.context.trace_id, "032x") == "1" * 32
    assert {
        (format(link.context.trace_id, "032x"), format(link.context.span_id, "016x")) for link in batch.links
    } == set(transactions.values())
    per_op = {s.attributes["twopc.gtid"]: s for s in spans if s.name == "twopc.participant.prepare"}
    assert set(per_op) == {"g1", "g2", "g3"}
    for gtid, (trace_id, span_id) in transactions.items():
        span = per_op[gtid]
        assert format(span.context.trace_id, "032x") == trace_id
        assert span.parent is not None and format(span.parent.span_id, "016x") == span_id
        assert [link.context.span_id for link in span.links] == [batch.context.span_id]
        assert span.attributes["twopc.vote"] == "yes"
    assert per_op["g3"].parent is not None and per_op["g3"].parent.span_id == batch.context.span_id
