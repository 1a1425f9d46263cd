"""Finished transactions leave the log after the retention, pruned in the background."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from coordinator.api import build_app
from coordinator.config import Settings
from tests.coordinator.conftest import SECRET, StubParticipant
from twopc_core.testing import wait_until


def _logged(path: Path) -> int:
    with sqlite3.connect(path) as db:
        (count,) = db.execute("SELECT count(*) FROM transactions").fetchone()
    return int(count)


async def test_finished_transactions_are_pruned_from_the_log_after_the_retention(tmp_path: Path) -> None:
    stub = StubParticipant("p1")
    participant = TestServer(stub.app())
    await participant.start_server()
    settings = Settings(
        log={"path": tmp_path / "coordinator.db", "retention_seconds": 0, "prune_interval_seconds": 0.05},
        transactions={"reaper_interval_ms": 20},
        participants=[{"name": "p1", "url": str(participant.make_url("/twopc")), "secret": SECRET}],
        auth={"enabled": False},  # who may call is not the point here
    )
    client = TestClient(TestServer(build_app(settings)))
    await client.start_server()
    try:
        for _ in range(3):
            response = await client.post("/v1/transactions:execute", json={"participants": [{"name": "p1"}]})
            assert response.status == 200, await response.text()
        await wait_until(lambda: _logged(tmp_path / "coordinator.db") == 0, timeout=10, message="the log pruned")
    finally:
        await client.close()
        await participant.close()
