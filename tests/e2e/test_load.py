"""Many concurrent clients against two participants: atomic, exactly once, nothing in doubt."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from compose.localcluster import LocalCluster
from participant_sdk.client import CoordinatorClient
from tests.e2e.conftest import gtids_at, payloads, settle

pytestmark = pytest.mark.slow

CLIENTS = 50
SECONDS = 3.0


async def test_fifty_concurrent_clients_agree_at_both_queues(
    cluster: LocalCluster, client: CoordinatorClient, http: aiohttp.ClientSession
) -> None:
    cluster.start()
    told: dict[str, str] = {}
    deadline = time.monotonic() + SECONDS

    async def worker(n: int) -> None:
        i = 0
        while time.monotonic() < deadline:
            i += 1
            answer = await client.execute(payloads(f"c{n}-{i}"))
            told[answer["gtid"]] = answer["outcome"]

    await asyncio.gather(*(worker(n) for n in range(CLIENTS)))
    await settle(http, cluster, client)

    at_a = await gtids_at(http, cluster, "queue-a")
    at_b = await gtids_at(http, cluster, "queue-b")
    committed = {g for g, o in told.items() if o == "committed"}
    assert len(committed) >= CLIENTS  # every client got at least one through
    assert at_a == sorted(at_a, key=at_a.index) and len(at_a) == len(set(at_a))
    assert set(at_a) == set(at_b) == committed
