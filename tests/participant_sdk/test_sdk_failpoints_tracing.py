"""Failpoints on the participant's steps, and trace context carried into its spans."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
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
