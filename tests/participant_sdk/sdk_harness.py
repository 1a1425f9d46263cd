"""Test harness for the participant SDK: a participant mounted under /twopc in a
parent app on a real test server, with its log in a real SQLite file."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from participant_sdk import Participant
from participant_sdk.testing import InMemoryResource, call_participant
from twopc_core.testing import wait_until

SECRET = "test-secret"
BRANCH = "p1"


def prepare_body(gtid: str, payload: Any = None, branch: str = BRANCH) -> dict[str, Any]:
    return {"gtid": gtid, "branch": branch, "payload": payload, "deadline": time.time() + 30}


def branch_body(gtid: str, branch: str = BRANCH, **extra: Any) -> dict[str, Any]:
    return {"gtid": gtid, "branch": branch, **extra}


class Harness:
    """One participant service; :meth:`restart` reopens it on the same log file."""

    def __init__(self, tmp_path: Path, coordinator_url: str) -> None:
        self.log_path = tmp_path / "participant.db"
        self.coordinator_url = coordinator_url
        self.resource = InMemoryResource()
        self.options: dict[str, Any] = {"inquiry_interval": 60.0}
        self.clock: Callable[[], float] = time.time
        self.participant: Participant
        self.client: TestClient | None = None

    async def start(self, **options: Any) -> Harness:
        self.options.update(options)
        self.participant = Participant(
            BRANCH,
            self.resource,
            SECRET,
            self.coordinator_url,
            self.log_path,
            clock=self.clock,
            **self.options,
        )
        app = web.Application()
        app.add_subapp("/twopc", self.participant.app())
        self.client = TestClient(TestServer(app))
        await self.client.start_server()
        # The loop's first round asks about every prepared branch at once; let it
        # finish so that tests see a settled participant.
        await wait_until(lambda: self.participant.inquiry_rounds >= 1, message="first inquiry round")
        return self

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None

    async def restart(self, **options: Any) -> Harness:
        await self.stop()
        return await self.start(**options)

    async def call(self, operation: str, body: Any, secret: str = SECRET, **kwargs: Any) -> tuple[int, Any]:
        assert self.client is not None
        kwargs.setdefault("now", self.clock())
        return await call_participant(self.client, f"/twopc/{operation}", operation, body, secret, **kwargs)

    async def prepare(self, gtid: str, payload: Any = None) -> tuple[int, Any]:
        return await self.call("prepare", prepare_body(gtid, payload))

    async def state(self, gtid: str) -> str:
        status, body = await self.call("status", branch_body(gtid))
        assert status == 200, body
        return body["status"]
