"""The events service (Kafka participant) on a participant test server, restartable on
the same data directory and the same stage topic, as a restarted process would be."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web

from adapters.kafka import KafkaResource
from adapters.kafka.events import PARTICIPANT, RESOURCE, build_app
from participant_sdk.testing import ParticipantTestServer

SECRET = "events-secret"


class EventsService(ParticipantTestServer):
    """``settings`` are the service's options (``shards=2``, further Kafka settings)."""

    def __init__(self, data_dir: Path, bootstrap: str, coordinator_url: str, name: str, **settings: Any) -> None:
        def service(**options: Any) -> web.Application:
            return build_app(name, bootstrap, coordinator_url, SECRET, data_dir, **options)

        options = {"inquiry_interval": 60.0, **settings}
        super().__init__(service, name, SECRET, participant_key=PARTICIPANT, options=options)

    @property
    def resource(self) -> KafkaResource:
        return self.app[RESOURCE]

    async def prepare(self, gtid: str, payload: Any = None, *, branch: str | None = None) -> tuple[int, Any]:
        """``payload`` may be the list of messages alone."""
        messages = {"messages": payload} if isinstance(payload, list) else payload
        return await super().prepare(gtid, messages, branch=branch)

    async def vote(self, gtid: str, messages: Any) -> str:
        status, body = await self.prepare(gtid, messages)
        assert status == 200, body
        return str(body["vote"])

    async def vote_reason(self, gtid: str, messages: Any) -> str:
        status, body = await self.prepare(gtid, messages)
        assert (status, body["vote"]) == (200, "no"), body
        return str(body["reason"])
