"""The participant test server shipped in participant_sdk.testing: it serves a bare
participant or a whole service, calls it as a coordinator would, restarts it on the
same data at the same address."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from participant_sdk import Participant
from participant_sdk.testing import InMemoryResource, ParticipantTestServer, StubCoordinator
from twopc_core.testing import FakeClock

SECRET = "server-secret"
NAME = "p1"
PARTICIPANT = web.AppKey("test.participant", Participant)


class Bare:
    """A bare participant's factory on one resource and one log file, for restarts."""

    def __init__(self, tmp_path: Path, coordinator_url: str, **fixed: Any) -> None:
        self.resource = InMemoryResource()
        self.log_path = tmp_path / "participant.db"
        self.coordinator_url = coordinator_url
        self.fixed = fixed
        self.built: list[Participant] = []

    def __call__(self, **options: Any) -> Participant:
        participant = Participant(
            name=NAME,
            resource=self.resource,
            secret=SECRET,
            coordinator_url=self.coordinator_url,
            log_path=self.log_path,
            **{**self.fixed, **options},
        )
        self.built.append(participant)
        return participant


@pytest.fixture
def bare(tmp_path: Path, coordinator: tuple[StubCoordinator, str]) -> Bare:
    return Bare(tmp_path, coordinator[1], inquiry_interval=60.0)


@pytest.fixture
async def server(bare: Bare) -> AsyncIterator[ParticipantTestServer]:
    async with ParticipantTestServer(bare, NAME, SECRET) as started:
        yield started


async def test_a_bare_participant_is_served_under_twopc_and_answers_each_shortcut(
    server: ParticipantTestServer, bare: Bare
) -> None:
    assert await server.prepare("g1", {"k": 1}) == (200, {"vote": "yes", "reason": None})
    assert await server.status("g1") == "prepared"
    assert await server.commit("g1") == (200, {"status": "committed", "reason": None})
    await server.prepare("g2")
    assert await server.abort("g2") == (200, {"status": "aborted", "reason": None})

    assert server.url.endswith("/twopc")
    assert bare.resource.committed == {("g1", NAME): {"k": 1}}
    assert bare.resource.aborted == {("g2", NAME)}
    assert server.participant is bare.built[-1]
    assert server.resource is bare.resource


async def test_shortcuts_act_on_another_branch_when_told(server: ParticipantTestServer, bare: Bare) -> None:
    await server.prepare("g1", branch="other")
    await server.commit("g1", branch="other")

    assert await server.status("g1", branch="other") == "committed"
    assert await server.status("g1") == "unknown"
    assert bare.resource.calls_of("commit") == [("g1", "other")]


async def test_commit_carries_extra_fields_for_a_one_phase_commit(server: ParticipantTestServer, bare: Bare) -> None:
    answer = await server.commit("g1", one_phase=True, payload={"k": 1})

    assert answer == (200, {"status": "committed", "reason": None})
    assert bare.resource.calls_of("prepare") == [("g1", NAME)]


async def test_a_call_signed_with_another_secret_is_refused(server: ParticipantTestServer) -> None:
    status, body = await server.call("status", {"gtid": "g1", "branch": NAME}, secret="not-" + SECRET)

    assert status == 401
    assert body["error"]["code"] == "unauthorized"


async def test_calls_are_signed_by_the_servers_clock(bare: Bare) -> None:
    late = FakeClock(start=time.time() - 3600)  # an hour behind the participant's clock
    async with ParticipantTestServer(bare, NAME, SECRET, clock=late.now) as server:
        status, body = await server.prepare("g1")

    assert status == 401
    assert "stale" in body["error"]["message"]


async def test_a_prepare_carries_a_deadline_prepare_timeout_ahead_on_the_servers_clock(bare: Bare) -> None:
    clock = FakeClock(start=time.time())
    async with ParticipantTestServer(bare, NAME, SECRET, clock=clock.now, prepare_timeout=12.0) as server:
        status, _ = await server.prepare("g1")
        row = server.participant.log.get("g1", NAME)

    assert status == 200
    assert row is not None and row.deadline == clock.now() + 12.0


async def test_start_returns_once_the_first_in_doubt_round_is_over(
    bare: Bare, coordinator: tuple[StubCoordinator, str]
) -> None:
    stub, _ = coordinator
    bare.resource.prepared[("g9", NAME)] = {"k": 9}  # held prepared, as after a crash
    stub.decide("g9", "committed", branches=[NAME])

    async with ParticipantTestServer(bare, NAME, SECRET) as server:
        assert server.participant.inquiry_rounds >= 1
        assert bare.resource.committed == {("g9", NAME): {"k": 9}}
        assert await server.status("g9") == "committed"


async def test_restart_serves_a_new_participant_on_the_same_data_at_the_same_address(
    server: ParticipantTestServer, bare: Bare, coordinator: tuple[StubCoordinator, str]
) -> None:
    coordinator[0].decide("g1", None)  # undecided: the branch stays in doubt
    await server.prepare("g1", {"k": 1})
    url, first = server.url, server.participant

    await server.restart()

    assert server.url == url
    assert server.participant is not first and server.participant is bare.built[-1]
    assert await server.status("g1") == "prepared"
    assert server.participant.in_doubt() == [("g1", NAME)]


async def test_options_are_kept_for_the_restarts_after(bare: Bare) -> None:
    server = ParticipantTestServer(bare, NAME, SECRET, options={"retention": 100.0})
    await server.start(inquiry_interval=30.0)
    try:
        await server.restart()
        kept = (server.participant.inquiry_interval, server.participant.retention)
        await server.restart(inquiry_interval=40.0)
        changed = server.participant.inquiry_interval
    finally:
        await server.stop()

    assert kept == (30.0, 100.0)
    assert changed == 40.0


async def test_stop_closes_the_participant_and_its_resource(bare: Bare) -> None:
    server = await ParticipantTestServer(bare, NAME, SECRET).start()
    await server.stop()
    await server.stop()  # a second stop changes nothing

    assert bare.resource.closed
    with pytest.raises(RuntimeError, match="not started"):
        server.http  # noqa: B018 - the property is what is tested


async def test_a_whole_service_app_is_served_and_its_participant_found_by_its_key(bare: Bare) -> None:
    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"name": request.app[PARTICIPANT].name})

    def service(**options: Any) -> web.Application:
        participant = bare(**options)
        app = web.Application()
        app[PARTICIPANT] = participant
        app.router.add_get("/hello", hello)
        app.add_subapp("/twopc", participant.app())
        return app

    async with ParticipantTestServer(service, NAME, SECRET, participant_key=PARTICIPANT) as server:
        response = await server.http.get("/hello")
        hello_body = await response.json()
        prepared = await server.prepare("g1")
        served = server.app

    assert hello_body == {"name": NAME}
    assert prepared == (200, {"vote": "yes", "reason": None})
    assert served[PARTICIPANT] is server.participant is bare.built[-1]


async def test_a_whole_app_without_a_participant_key_is_refused_naming_it(bare: Bare) -> None:
    def service(**options: Any) -> web.Application:
        app = web.Application()
        app.add_subapp("/twopc", bare(**options).app())
        return app

    with pytest.raises(TypeError, match="participant_key"):
        await ParticipantTestServer(service, NAME, SECRET).start()


async def test_a_participant_that_fails_to_start_leaves_the_server_stopped(bare: Bare) -> None:
    bare.resource.errors["recover"] = RuntimeError("the resource is unreachable")
    server = ParticipantTestServer(bare, NAME, SECRET)

    with pytest.raises(RuntimeError, match="unreachable"):
        await server.start()
    with pytest.raises(RuntimeError, match="not started"):
        server.http  # noqa: B018 - the property is what is tested
    del bare.resource.errors["recover"]
    await server.start()  # and it can be started once the fault is gone
    await server.stop()


async def test_status_that_is_not_answered_200_raises_with_the_answer(server: ParticipantTestServer) -> None:
    with pytest.raises(AssertionError, match="400"):
        await server.status("")  # not a gtid
