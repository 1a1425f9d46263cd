"""The mock queue service on a participant test server, restartable on the same data
directory, with shortcuts for its queue and its fault switches."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from adapters.mockqueue.service import PARTICIPANT, build_app
from participant_sdk.testing import ParticipantTestServer

SECRET = "queue-secret"
NAME = "queue-a"


class QueueService(ParticipantTestServer):
    def __init__(self, data_dir: Path, coordinator_url: str | Sequence[str]) -> None:
        def service(**options: Any) -> web.Application:
            return build_app(NAME, data_dir, coordinator_url, SECRET, **options)

        super().__init__(service, NAME, SECRET, participant_key=PARTICIPANT, options={"inquiry_interval": 60.0})

    async def prepare(self, gtid: str, payload: Any = None, *, branch: str | None = None) -> tuple[int, Any]:
        """``payload`` may be the list of items alone."""
        return await super().prepare(gtid, {"items": payload} if isinstance(payload, list) else payload, branch=branch)

    async def items(self) -> list[dict[str, Any]]:
        response = await self.http.get("/queue/items")
        assert response.status == 200
        items: list[dict[str, Any]] = (await response.json())["items"]
        return items

    async def set_faults(self, **faults: Any) -> tuple[int, Any]:
        response = await self.http.post("/queue/faults", json=faults)
        return response.status, await response.json()
