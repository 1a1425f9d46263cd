"""One transaction, one trace: a coordinator and two participant services as real
processes export their spans over OTLP/HTTP to a receiver in the test.

The exporters' schedule is longer than the test, so the spans arrive only because
each service exports what it has left when it stops.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan

from compose.localcluster import LocalCluster
from participant_sdk.client import CoordinatorClient
from tests.e2e.conftest import FAST, QUEUES, payloads
from twopc_core.testing import wait_until


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]


class OtlpReceiver:
    """An OTLP/HTTP trace receiver: ``POST /v1/traces``, protobuf."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/traces", self._export)
        return app

    async def _export(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        message = ExportTraceServiceRequest.FromString(body)
        for resource_spans in message.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        ReceivedSpan(
                            service=str(resource.get("service.name")),
                            name=span.name,
                            kind=span.kind,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            attributes={a.key: _value(a.value) for a in span.attributes},
                        )
                    )
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(), content_type="application/x-protobuf"
        )

    def of(self, service: str) -> list[ReceivedSpan]:
        return [s for s in self.spans if s.service == service]


def _value(value: AnyValue) -> Any:
    return getattr(value, value.WhichOneof("value")) if value.WhichOneof("value") else None


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[OtlpReceiver, str]]:
    otlp = OtlpReceiver()
    server = TestServer(otlp.app(), host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield otlp, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


SERVICES = {"coordinator": "test-coordinator", **{queue: f"test-{queue}" for queue in QUEUES}}


async def test_one_committed_transaction_is_one_trace_across_the_three_services(
    tmp_path: Path, receiver: tuple[OtlpReceiver, str]
) -> None:
    otlp, endpoint = receiver
    cluster = LocalCluster(tmp_path / "cluster", queues=QUEUES, coordinator_toml=FAST)
    for node, service in SERVICES.items():
        cluster.nodes[node].env.update(
            OTEL_TRACES_EXPORTER="otlp",
            OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
            OTEL_SERVICE_NAME=service,
            OTEL_BSP_SCHEDULE_DELAY="600000",  # only the stop exports
        )
    # The processes' exports reach this loop's receiver: block it in no wait of theirs.
    await asyncio.to_thread(cluster.start)
    try:
        async with CoordinatorClient(cluster.coordinator_url, timeout=20, token=cluster.tokens["client"]) as client:
            committed = await client.execute(payloads("traced"))
            gtid = committed["gtid"]
            assert committed["outcome"] == "committed"

            async def acknowledged() -> bool:
                view = await client.get(gtid)
                return not any(b["pending"] for b in view["branches"])

            await wait_until(acknowledged, timeout=20, message="phase 2 acknowledged")
    finally:
        await asyncio.to_thread(cluster.stop)

    def all_arrived() -> bool:
        return all(
            any(s.name == f"twopc.participant.{op}" for s in otlp.of(SERVICES[q]))
            for q in QUEUES
            for op in ("prepare", "commit")
        ) and any(s.name == "coordinator.commit_round" for s in otlp.of("test-coordinator"))

    await wait_until(all_arrived, timeout=20, message="spans of the coordinator and both participants")

    coordinator = {s.span_id: s for s in otlp.of("test-coordinator")}
    [request] = [s for s in coordinator.values() if s.name == "POST /v1/transactions:execute"]
    assert request.kind == ProtoSpan.SPAN_KIND_SERVER
    assert request.parent_id == ""
    assert request.attributes["http.request.method"] == "POST"
    assert request.attributes["http.route"] == "/v1/transactions:execute"
    assert request.attributes["url.path"] == "/v1/transactions:execute"
    assert request.attributes["http.response.status_code"] == 200
    assert request.attributes["server.address"] == "127.0.0.1"
    assert request.attributes["twopc.gtid"] == gtid
    assert request.attributes["twopc.outcome"] == "committed"
    trace_id = request.trace_id

    def descends_from_the_request(span: ReceivedSpan) -> bool:
        seen = span
        while seen.parent_id in coordinator:
            seen = coordinator[seen.parent_id]
            if seen is request:
                return True
        return False

    rounds = {s.name: s for s in coordinator.values() if s.name.startswith("coordinator.")}
    assert {"coordinator.prepare_round", "coordinator.force_decision", "coordinator.commit_round"} <= set(rounds)
    for round_span in rounds.values():
        assert round_span.parent_id == request.span_id
        assert round_span.attributes["twopc.gtid"] == gtid
    assert rounds["coordinator.prepare_round"].attributes["twopc.vote"] == "yes"
    assert rounds["coordinator.commit_round"].attributes["twopc.outcome"] == "committed"

    exchanges = [s for s in coordinator.values() if s.name.startswith("participant.")]
    assert {(s.name, s.attributes["twopc.participant"]) for s in exchanges} == {
        (f"participant.{op}", q) for q in QUEUES for op in ("prepare", "commit")
    }
    for exchange in exchanges:
        assert exchange.kind == ProtoSpan.SPAN_KIND_CLIENT
        assert exchange.trace_id == trace_id
        assert descends_from_the_request(exchange)
        assert exchange.attributes["twopc.gtid"] == gtid
        if exchange.attributes.get("error.type") == "timeout":
            continue  # a slow answer, retried: the retry's span says what was answered
        assert exchange.attributes["http.response.status_code"] == 200
        if exchange.name == "participant.prepare":
            assert coordinator[exchange.parent_id].name == "coordinator.prepare_round"
            assert exchange.attributes["twopc.vote"] == "yes"
        else:
            assert coordinator[exchange.parent_id].name == "coordinator.commit_round"
            assert exchange.attributes["twopc.outcome"] == "committed"

    for queue in QUEUES:
        for op in ("prepare", "commit"):
            servers = [s for s in otlp.of(SERVICES[queue]) if s.name == f"twopc.participant.{op}"]
            assert servers
            for server in servers:  # more than one only if a slow answer was retried
                client_span = coordinator[server.parent_id]  # the exchange that carried it
                assert client_span.name == f"participant.{op}"
                assert client_span.attributes["twopc.participant"] == queue
                assert server.kind == ProtoSpan.SPAN_KIND_SERVER
                assert server.trace_id == trace_id
                assert server.attributes["twopc.gtid"] == gtid
                assert server.attributes["twopc.participant"] == queue
                if op == "prepare":
                    assert server.attributes["twopc.vote"] == "yes"
                else:
                    assert server.attributes["twopc.outcome"] == "committed"
