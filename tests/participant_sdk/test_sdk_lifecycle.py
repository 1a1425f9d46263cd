"""Mounting the participant's sub-app is all an embedding service has to do."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from participant_sdk import Participant, PrepareResult, Resource, Vote
from participant_sdk.testing import InMemoryResource


async def test_mounted_sub_app_starts_and_closes_the_participant(tmp_path: Path) -> None:
    resource = InMemoryResource()
    participant = Participant(
        name="p1", resource=resource, secret="s", coordinator_url="http://127.0.0.1:9", log_path=tmp_path / "p.db"
    )
    app = web.Application()
    app.add_subapp("/twopc", participant.app())

    client = TestClient(TestServer(app))
    await client.start_server()
    started = resource.started and (tmp_path / "p.db").exists()
    await client.close()

    assert started
    assert resource.closed


async def test_participant_can_be_used_as_an_async_context_manager(tmp_path: Path) -> None:
    resource = InMemoryResource()
    async with Participant(
        name="p1", resource=resource, secret="s", coordinator_url="http://127.0.0.1:9", log_path=tmp_path / "p.db"
    ):
        assert resource.started
    assert resource.closed


async def test_starting_twice_is_refused(tmp_path: Path) -> None:
    participant = Participant(
        name="p1",
        resource=InMemoryResource(),
        secret="s",
        coordinator_url="http://127.0.0.1:9",
        log_path=tmp_path / "p.db",
    )
    async with participant:
        with pytest.raises(RuntimeError, match="already started"):
            await participant.start()


class _TwoStep(Resource):
    def __init__(self, vote: Vote) -> None:
        self.vote = vote
        self.steps: list[str] = []

    async def prepare(self, gtid: str, branch: str, payload: object) -> PrepareResult:
        self.steps.append("prepare")
        return PrepareResult(self.vote, None if self.vote is not Vote.NO else "no")

    async def commit(self, gtid: str, branch: str) -> None:
        self.steps.append("commit")

    async def abort(self, gtid: str, branch: str) -> None:
        self.steps.append("abort")

    async def recover(self) -> list[tuple[str, str]]:
        return []


async def test_a_start_that_fails_leaves_nothing_open_and_can_be_tried_again(tmp_path: Path) -> None:
    resource = InMemoryResource()
    resource.errors["recover"] = RuntimeError("resource not ready")
    participant = Participant(
        name="p1", resource=resource, secret="s", coordinator_url="http://127.0.0.1:9", log_path=tmp_path / "p.db"
    )

    with pytest.raises(RuntimeError, match="not ready"):
        await participant.start()
    assert resource.closed
    await participant.close()  # nothing to close: not an error

    del resource.errors["recover"]
    async with participant:
        assert participant.in_doubt_count == 0
