"""The events service (Kafka participant) on a test server, restartable on the same
data directory and the same stage topic, as a restarted process would be."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from adapters.kafka import KafkaResource
from adapters.kafka.events import PARTICIPANT, RESOURCE, build_app
from participant_sdk import Participant
from participant_sdk.testing import call_participant
from twopc_core.testing import wait_until

SECRET = "events-secret"


class EventsService:
    def __init__(self, data_dir: Path, bootstrap: str, coordinator_url: str, name: str, **options: Any) -> None:
        self.data_dir = data_dir
        self.bootstrap = bootstrap
        self.coordinator_url = coordinator_url
        self.name = name
        self.options = options
        self.client: TestClient | None = None
        self._app: Any = None

    async def start(self) -> EventsService:
        self._app = build_app(
            self.name, self.bootstrap, self.coordinator_url, SECRET, self.data_dir, 60.0, **self.options
        )
        self.client = TestClient(TestServer(self._app))
        await self.client.start_server()
        participant = self._app[PARTICIPANT]
        await wait_until(lambda: participant.inquiry_rounds >= 1, message="first inquiry round")
        return self

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None

    async def restart(self) -> EventsService:
        await self.stop()
        return await self.start()

    @property
    def resource(self) -> KafkaResource:
        return self._app[RESOURCE]

    @property
    def participant(self) -> Participant:
        return self._app[PARTICIPANT]

    @property
    def http(self) -> TestClient:
        assert self.client is not None
        return self.client

    async def call(self, operation: str, body: Any) -> tuple[int, Any]:
        return await call_participant(self.http, f"/twopc/{operation}", operation, body, SECRET)

    async def prepare(self, gtid: str, messages: Any) -> tuple[int, Any]:
        payload = {"messages": messages} if isinstance(messages, list) else messages
        body = {"gtid": gtid, "branch": self.name, "payload": payload, "deadline": time.time() + 30}
        return await self.call("prepare", body)

    async def commit(self, gtid: str) -> tuple[int, Any]:
        return await self.call("commit", {"gtid": gtid, "branch": self.name})

    async def abort(self, gtid: str) -> tuple[int, Any]:
        return await self.call("abort", {"gtid": gtid, "branch": self.name})

    async def vote(self, gtid: str, messages: Any) -> str:
        status, body = await self.prepare(gtid, messages)
        assert status == 200, body
        return body["vote"]

    async def vote_reason(self, gtid: str, messages: Any) -> str:
        status, body = await self.prepare(gtid, messages)
        assert (status, body["vote"]) == (200, "no"), body
        return body["reason"]
