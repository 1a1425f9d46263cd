"""The transport's channel to an SDK participant: calls go as frames while it is open,
over HTTP to a participant without it, and a dropped channel fails the calls in flight
as a failed HTTP exchange does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from coordinator.config import ParticipantSettings
from coordinator.transport import Backoff, Transport
from participant_sdk import Participant
from participant_sdk.testing import InMemoryResource, ParticipantTestServer
from twopc_core.http import Handler
from twopc_core.protocol import Outcome, Vote
from twopc_core.testing import wait_until

SECRET = "channel-secret"
NAME = "p1"
PARTICIPANT: web.AppKey[Participant] = web.AppKey("participant", Participant)


class GatedResource(InMemoryResource):
    """An in-memory resource whose commits, too, wait for a gate when one is set."""

    commit_gate: asyncio.Event | None = None

    async def commit(self, gtid: str, branch: str) -> None:
        self.calls.append(("commit-begun", gtid, branch))
        if self.commit_gate is not None:
            await self.commit_gate.wait()
        await super().commit(gtid, branch)


class CountingServer(ParticipantTestServer):
    """A participant whose protocol app counts the HTTP calls it serves (frames on the
    channel are not HTTP calls: only the channel's opening is)."""

    def __init__(self, tmp_path: Path, mount: str = "aiohttp") -> None:
        self.http_calls: list[str] = []
        #: The participant's spans.
        self.spans = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.shared_resource = GatedResource()

        @web.middleware
        async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
            self.http_calls.append(f"{request.method} {request.path}")
            return await handler(request)

        def build(**options: object) -> web.Application | Participant:
            participant = Participant(
                name=NAME,
                resource=self.shared_resource,
                secret=SECRET,
                coordinator_url="http://127.0.0.1:9",
                log_path=tmp_path / "participant.db",
                inquiry_interval=60.0,
                tracer_provider=provider,
            )
            if mount == "asgi":
                return participant
            app = web.Application()
            app[PARTICIPANT] = participant
            app.add_subapp("/twopc", participant.app(middlewares=[count]))
            return app

        super().__init__(build, NAME, SECRET, participant_key=PARTICIPANT, mount=mount)  # type: ignore[arg-type]

    @property
    def posts(self) -> list[str]:
        return [call for call in self.http_calls if call.startswith("POST")]


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[CountingServer]:
    served = CountingServer(tmp_path)
    await served.start()
    yield served
    await served.stop()


async def transport_to(url: str, secret: str = SECRET, channel: bool = True) -> Transport:
    settings = ParticipantSettings(name=NAME, url=url, secret=secret, channel=channel)
    transport = Transport([settings], Backoff(0.01, 0.05), phase_two_timeout=2.0)
    await transport.start()
    return transport


def channel_of(transport: Transport):  # type: ignore[no-untyped-def]
    channel = transport._endpoint(NAME).channel
    assert channel is not None
    return channel


async def test_calls_go_as_frames_once_the_channel_is_open(server: CountingServer) -> None:
    transport = await transport_to(server.url)
    try:
        await wait_until(lambda: channel_of(transport).open, message="the channel open")
        vote, _ = await transport.prepare(NAME, "g1", {"k": 1}, deadline=4e9, timeout=5)
        answer = await transport.deliver(NAME, "g1", Outcome.COMMITTED)
        status = await transport.status(NAME, "g1")
        counts = transport.endpoint_counts()[NAME]
    finally:
        await transport.close()

    assert vote is Vote.YES
    assert answer.status is Outcome.COMMITTED
    assert status.value == "committed"
    assert (counts.exchanges, counts.channel_exchanges, counts.channel_open) == (3, 3, True)
    assert server.posts == []
    assert server.http_calls == ["GET /twopc/channel"]


async def test_a_call_over_the_channel_carries_its_transactions_trace_context(server: CountingServer) -> None:
    transport = await transport_to(server.url)
    transactions = TracerProvider().get_tracer("transactions")
    try:
        await wait_until(lambda: channel_of(transport).open, message="the channel open")
        with transactions.start_as_current_span("transaction g1") as transaction:
            await transport.prepare(NAME, "g1", None, deadline=4e9, timeout=5)
    finally:
        await transport.close()

    (prepare,) = [span for span in server.spans.get_finished_spans() if span.name == "twopc.participant.prepare"]
    assert prepare.context is not None and prepare.parent is not None
    assert prepare.context.trace_id == transaction.get_span_context().trace_id
    assert prepare.attributes is not None and prepare.attributes["twopc.gtid"] == "g1"
    assert server.posts == []


async def test_calls_of_one_turn_share_a_frame_as_a_batch(server: CountingServer) -> None:
    transport = await transport_to(server.url)
    try:
        await wait_until(lambda: channel_of(transport).open, message="the channel open")
        votes = await asyncio.gather(*(transport.prepare(NAME, f"g{i}", None, 4e9, timeout=5) for i in range(5)))
        stats = transport.exchange_stats()
    finally:
        await transport.close()

    assert [vote for vote, _ in votes] == [Vote.YES] * 5
    assert stats == {"participant_calls": 5, "participant_exchanges": 1}
    assert server.posts == []


async def test_a_participant_without_the_channel_is_called_over_http(tmp_path: Path) -> None:
    served = await CountingServer(tmp_path, mount="asgi").start()
    transport = await transport_to(served.url)
    try:
        channel = channel_of(transport)
        await wait_until(lambda: channel._opening is None, message="the channel refused")
        vote, _ = await transport.prepare(NAME, "g1", None, deadline=4e9, timeout=5)
        again, _ = await transport.prepare(NAME, "g2", None, deadline=4e9, timeout=5)
    finally:
        await transport.close()
        await served.stop()

    assert (vote, again) == (Vote.YES, Vote.YES)
    assert (channel.open, channel.opened) == (False, 0)


async def test_a_coordinator_set_to_http_opens_no_channel(server: CountingServer) -> None:
    transport = await transport_to(server.url, channel=False)
    try:
        vote, _ = await transport.prepare(NAME, "g1", None, deadline=4e9, timeout=5)
    finally:
        await transport.close()

    assert vote is Vote.YES
    assert server.http_calls == ["POST /twopc/prepare"]


async def test_a_coordinator_with_the_wrong_secret_gets_no_channel_and_no_vote(server: CountingServer) -> None:
    transport = await transport_to(server.url, secret="not-the-secret")
    try:
        await wait_until(lambda: channel_of(transport)._opening is None, message="the channel refused")
        vote, reason = await transport.prepare(NAME, "g1", None, deadline=4e9, timeout=5)
        assert not channel_of(transport).open
    finally:
        await transport.close()

    assert vote is Vote.NO
    assert reason is not None and "401" in reason
    assert server.shared_resource.calls == []


async def test_a_call_over_the_channel_keeps_its_own_deadline(server: CountingServer) -> None:
    server.shared_resource.gate = asyncio.Event()
    transport = await transport_to(server.url)
    try:
        await wait_until(lambda: channel_of(transport).open, message="the channel open")
        vote, reason = await transport.prepare(NAME, "g1", None, deadline=4e9, timeout=0.3)
        assert channel_of(transport).open  # one slow call does not cost the others their channel
        server.shared_resource.gate.set()
        status = await transport.status(NAME, "g2")
    finally:
        await transport.close()

    assert vote is Vote.NO
    assert reason is not None and "no answer within" in reason
    assert status.value == "unknown"


async def test_a_dropped_channel_fails_the_calls_in_flight_as_a_failed_exchange(server: CountingServer) -> None:
    server.shared_resource.gate = asyncio.Event()
    transport = await transport_to(server.url)
    try:
        await wait_until(lambda: channel_of(transport).open, message="the channel open")
        prepare = asyncio.create_task(transport.prepare(NAME, "g1", None, deadline=4e9, timeout=30))
        await wait_until(lambda: server.shared_resource.calls_of("prepare"), message="the prepare under way")
        stopping = asyncio.create_task(server.stop())  # closes the channel, then waits for the prepare
        vote, reason = await asyncio.wait_for(prepare, 10)
        server.shared_resource.gate.set()
        await stopping
        counts = transport.endpoint_counts()[NAME]
    finally:
        await transport.close()

    assert vote is Vote.NO
    assert reason is not None and "unreachable" in reason and "channel" in reason
    assert counts.failed_exchanges == 1


async def test_the_channel_opens_again_after_the_participant_restarts(server: CountingServer) -> None:
    transport = await transport_to(server.url)
    try:
        await wait_until(lambda: channel_of(transport).open, message="the channel open")
        await server.restart()
        # The first calls after the drop go over HTTP while the channel is asked for again.
        await wait_until(lambda: not channel_of(transport).open, message="the old channel gone")
        vote, _ = await transport.prepare(NAME, "g1", None, deadline=4e9, timeout=5)
        await wait_until(lambda: channel_of(transport).open, timeout=10, message="the channel open again")
        again, _ = await transport.prepare(NAME, "g2", None, deadline=4e9, timeout=5)
        opened = channel_of(transport).opened
    finally:
        await transport.close()

    assert (vote, again) == (Vote.YES, Vote.YES)
    assert opened == 2


async def test_phase_two_over_a_dropped_channel_is_retried_until_acknowledged(server: CountingServer) -> None:
    transport = await transport_to(server.url)
    try:
        await wait_until(lambda: channel_of(transport).open, message="the channel open")
        vote, _ = await transport.prepare(NAME, "g1", None, deadline=4e9, timeout=5)
        server.shared_resource.commit_gate = gate = asyncio.Event()
        delivery = asyncio.create_task(transport.deliver(NAME, "g1", Outcome.COMMITTED))
        await wait_until(lambda: server.shared_resource.calls_of("commit-begun"), message="the commit under way")
        stopping = asyncio.create_task(server.stop())
        await wait_until(lambda: transport.endpoint_counts()[NAME].phase_two_retries >= 1, message="a retry")
        server.shared_resource.commit_gate = None
        gate.set()
        await stopping
        await server.start()
        answer = await asyncio.wait_for(delivery, 20)
    finally:
        await transport.close()

    assert vote is Vote.YES
    assert answer.status is Outcome.COMMITTED
