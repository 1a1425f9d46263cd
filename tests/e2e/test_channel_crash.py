"""The coordinator's channels to real mock-queue processes: a queue killed with a
prepare in flight on its channel makes that prepare a failed exchange at once (a ``no``:
the transaction aborts everywhere), and once restarted it is spoken to over a channel
again."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from compose.localcluster import LocalCluster
from participant_sdk.client import CoordinatorClient
from tests.e2e.conftest import FAST, QUEUES, gtids_at, settle
from twopc_core.testing import wait_until

#: A prepare's own deadline far beyond the test's patience: only the dropped channel
#: can fail it in time.
SLOW_DEADLINES = FAST.replace("prepare_timeout_ms = 3000", "prepare_timeout_ms = 60000")
assert SLOW_DEADLINES != FAST, "the e2e timeouts changed: set this prepare timeout anew"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    local = LocalCluster(tmp_path / "cluster", queues=QUEUES, coordinator_toml=SLOW_DEADLINES, inquiry_interval=0.3)
    try:
        yield local
    finally:
        local.stop()


async def channel_metric(http: aiohttp.ClientSession, cluster: LocalCluster, metric: str, queue: str) -> float:
    headers = {"Authorization": f"Bearer {cluster.tokens['reader']}"}
    async with http.get(f"{cluster.coordinator_url}/metrics", headers=headers) as response:
        text = await response.text()
    found = re.search(rf'^{metric}\{{participant="{queue}"\}} (\S+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def channels_open(http: aiohttp.ClientSession, cluster: LocalCluster) -> bool:
    opened = [await channel_metric(http, cluster, "twopc_participant_channel_open", q) for q in QUEUES]
    return all(value == 1.0 for value in opened)


async def test_a_queue_killed_with_a_prepare_on_its_channel_aborts_the_transaction_at_once(
    cluster: LocalCluster, client: CoordinatorClient, http: aiohttp.ClientSession
) -> None:
    cluster.start()
    await wait_until(lambda: channels_open(http, cluster), message="both channels open")
    async with http.post(f"{cluster.url('queue-a')}/queue/faults", json={"delay_ms": 600_000}) as response:
        assert response.status == 200
    calls_before = await channel_metric(http, cluster, "twopc_participant_calls_total", "queue-a")
    payloads = [{"name": queue, "payload": {"items": [f"{queue}-lost"]}} for queue in QUEUES]
    execute = asyncio.create_task(client.execute(payloads))
    await wait_until(
        lambda: _more(channel_metric(http, cluster, "twopc_participant_calls_total", "queue-a"), calls_before),
        message="the prepare sent to queue-a",
    )

    cluster.nodes["queue-a"].kill()
    killed_at = time.monotonic()
    answer = await asyncio.wait_for(execute, 30)

    assert answer.outcome == "aborted"
    assert time.monotonic() - killed_at < 20  # the prepare's own deadline is a minute away
    cluster.restart("queue-a")
    await wait_until(lambda: channels_open(http, cluster), timeout=20, message="the channels open again")
    exchanges_before = await channel_metric(http, cluster, "twopc_participant_channel_exchanges_total", "queue-a")
    committed = await client.execute([{"name": queue, "payload": {"items": [f"{queue}-kept"]}} for queue in QUEUES])
    assert committed.outcome == "committed"
    exchanges_after = await channel_metric(http, cluster, "twopc_participant_channel_exchanges_total", "queue-a")
    assert exchanges_after > exchanges_before
    await settle(http, cluster, client)
    for queue in QUEUES:
        assert await gtids_at(http, cluster, queue) == [committed.gtid]


async def _more(reading: object, than: float) -> bool:
    value = await reading  # type: ignore[misc]
    return bool(value > than)
