"""A participant service run as a user runs it, told of two coordinator replicas of
which one is down: it settles an in-doubt branch through the other."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from compose.localcluster import Service
from compose.supervisor import Node, free_port
from participant_sdk.testing import StubCoordinator, call_participant
from twopc_core.testing import wait_until

pytestmark = pytest.mark.slow

SECRET = "replicas-secret"


async def test_a_queue_told_of_two_replicas_settles_an_in_doubt_branch_through_the_one_up(
    tmp_path: Path, coordinator: tuple[StubCoordinator, str], stopped_coordinator: str, http: aiohttp.ClientSession
) -> None:
    stub, url = coordinator
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    argv = Service("queue-a").argv(port, tmp_path / "queue-a", [stopped_coordinator, url], SECRET, 0.2)
    node = Node("queue-a", argv, ready_url=f"{base}/healthz", log_path=tmp_path / "queue-a.log")
    node.start()
    try:
        await asyncio.to_thread(node.wait_ready, 30.0)
        # Decided before the prepare, so that no inquiry can find the transaction unknown.
        stub.decide("c1-g1", "committed", branches=["queue-a"])
        body = {"gtid": "c1-g1", "branch": "queue-a", "payload": {"items": ["x"]}, "deadline": time.time() + 30}
        prepared = await call_participant(http, f"{base}/twopc/prepare", "prepare", body, SECRET)

        async def committed_items() -> list[object]:
            async with http.get(f"{base}/queue/items") as response:
                return [item["value"] for item in (await response.json())["items"]]

        items = await wait_until(committed_items, timeout=15, message="the in-doubt loop commits c1-g1")
    finally:
        node.stop()

    assert prepared == (200, {"vote": "yes", "reason": None})
    assert items == ["x"]
    assert "c1-g1" in stub.inquiries
    assert "coordinator unreachable" not in node.log_text()
