"""A mock queue service on a test server, restartable on the same data directory."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from adapters.mockqueue.service import PARTICIPANT, build_app
from participant_sdk.testing import call_participant
from twopc_core.testing import wait_until

SECRET = "queue-secret"
NAME = "queue-a"


class QueueService:
    def __init__(self, data_dir: Path, coordinator_url: str) -> None:
        self.data_dir = data_dir
        self.coordinator_url = coordinator_url
        self.client: TestClient | None = None

    async def start(self) -> QueueService:
        app = build_app(NAME, self.data_dir, self.coordinator_url, SECRET, inquiry_interval=60.0)
        self.client = TestClient(TestServer(app))
        await self.client.start_server()
        participant = app[PARTICIPANT]
        await wait_until(lambda: participant.inquiry_rounds >= 1, message="first inquiry round")
        return self

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None

    async def restart(self) -> QueueService:
        await self.stop()
        return await self.start()

    @property
    def http(self) -> TestClient:
        assert self.client is not None
        return self.client

    async def call(self, operation: str, body: Any) -> tuple[int, Any]:
        return await call_participant(self.http, f"/twopc/{operation}", operation, body, SECRET)

    async def prepare(self, gtid: str, items: Any) -> tuple[int, Any]:
        payload = {"items": items} if isinstance(items, list) else items
        body = {"gtid": gtid, "branch": NAME, "payload": payload, "deadline": time.time() + 30}
        return await self.call("prepare", body)

    async def commit(self, gtid: str) -> tuple[int, Any]:
        return await self.call("commit", {"gtid": gtid, "branch": NAME})

    async def abort(self, gtid: str) -> tuple[int, Any]:
        return await self.call("abort", {"gtid": gtid, "branch": NAME})

    async def items(self) -> list[dict[str, Any]]:
        response = await self.http.get("/queue/items")
        assert response.status == 200
        return (await response.json())["items"]

    async def set_faults(self, **faults: Any) -> tuple[int, Any]:
        response = await self.http.post("/queue/faults", json=faults)
        return response.status, await response.json()
