"""``/metrics`` of real processes after a known workload, read with prometheus_client's
own parser: the counts are what was committed and aborted, on the coordinator and on
each participant."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from compose.localcluster import LocalCluster
from participant_sdk.client import CoordinatorClient
from twopc_core.testing import wait_until

pytestmark = pytest.mark.slow

COMMITTED, VOTED_NO = 3, 2


async def scrape(url: str, token: str | None = None) -> dict[str, list[Sample]]:
    """Every sample of ``url``'s /metrics by family name, as Prometheus would read them."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics", headers=headers) as response:
        assert response.status == 200
        assert response.content_type == "text/plain"
        text = await response.text()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def value(families: dict[str, list[Sample]], sample_name: str, **labels: str) -> float:
    family = sample_name.removesuffix("_total").removesuffix("_count").removesuffix("_sum")
    matches = [
        s.value
        for s in families[family]
        if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert matches, f"no sample {sample_name} {labels}"
    return sum(matches)


def workload(tag: str, valid_b: bool) -> list[dict[str, Any]]:
    return [
        {"name": "queue-a", "payload": {"items": [f"{tag}-a"]}},
        # The mock queue votes no on a payload that is not a list of items.
        {"name": "queue-b", "payload": {"items": [f"{tag}-b"] if valid_b else "not a list"}},
    ]


async def test_counts_on_the_coordinator_and_the_participants_match_the_workload(cluster: LocalCluster) -> None:
    await asyncio.to_thread(cluster.start)
    async with CoordinatorClient(cluster.coordinator_url, timeout=20, token=cluster.tokens["client"]) as client:
        for number in range(COMMITTED):
            assert (await client.execute(workload(f"ok{number}", True)))["state"] == "committed"
        for number in range(VOTED_NO):
            assert (await client.execute(workload(f"no{number}", False)))["state"] == "aborted"
    reader = cluster.tokens["reader"]

    async def phase_two_done() -> bool:
        families = await scrape(cluster.coordinator_url, reader)
        return value(families, "twopc_unfinished_transactions") == 0

    await wait_until(phase_two_done, timeout=10)
    coordinator = await scrape(cluster.coordinator_url, reader)
    assert value(coordinator, "twopc_transactions_total", outcome="committed") == COMMITTED
    assert value(coordinator, "twopc_transactions_total", outcome="aborted") == VOTED_NO
    assert value(coordinator, "twopc_transactions_begun_total") == COMMITTED + VOTED_NO
    assert value(coordinator, "twopc_commit_duration_seconds_count") == COMMITTED + VOTED_NO
    assert value(coordinator, "twopc_phase_duration_seconds_count", phase="prepare") == COMMITTED + VOTED_NO
    # Only a commit is forced to the log; an abort is presumed.
    assert value(coordinator, "twopc_phase_duration_seconds_count", phase="decision") == COMMITTED
    assert value(coordinator, "twopc_decisions_logged_total") == COMMITTED
    assert value(coordinator, "twopc_phase_duration_seconds_count", phase="commit") == COMMITTED
    assert value(coordinator, "twopc_phase_duration_seconds_count", phase="abort") == VOTED_NO
    assert value(coordinator, "twopc_log_commit_duration_seconds_count") == value(
        coordinator, "twopc_log_commits_total"
    )
    # Each transaction: a prepare to each queue, a commit to both or an abort to queue-a.
    calls = value(coordinator, "twopc_participant_calls_total", participant="queue-a")
    assert calls == 2 * (COMMITTED + VOTED_NO)
    exchanges = value(coordinator, "twopc_participant_exchange_duration_seconds_count", participant="queue-a")
    assert exchanges == value(coordinator, "twopc_participant_exchanges_total", participant="queue-a")
    assert value(coordinator, "twopc_participant_up", participant="queue-b") == 1
    assert value(coordinator, "twopc_in_doubt_transactions") == 0
    assert value(coordinator, "twopc_replica_ready") == 1
    labels = {name for samples in coordinator.values() for sample in samples for name in sample.labels}
    assert "gtid" not in labels, "a gtid is never a label"

    queue_a = await scrape(cluster.url("queue-a"))
    assert value(queue_a, "twopc_branch_votes_total", vote="yes") == COMMITTED + VOTED_NO
    assert value(queue_a, "twopc_branches_total", outcome="committed") == COMMITTED
    assert value(queue_a, "twopc_branches_total", outcome="aborted") == VOTED_NO
    assert value(queue_a, "twopc_branch_prepare_duration_seconds_count") == COMMITTED + VOTED_NO
    assert value(queue_a, "twopc_in_doubt_branches") == 0
    assert value(queue_a, "twopc_mockqueue_items_published_total") == COMMITTED
    queue_b = await scrape(cluster.url("queue-b"))
    assert value(queue_b, "twopc_branch_votes_total", vote="yes") == COMMITTED
    assert value(queue_b, "twopc_branch_votes_total", vote="no") == VOTED_NO
    assert value(queue_b, "twopc_branches_total", outcome="committed") == COMMITTED
    assert value(queue_b, "twopc_participant_info", participant="queue-b") == 1


async def test_an_in_doubt_branch_shows_on_both_sides_while_the_coordinator_cannot_finish(
    cluster: LocalCluster,
) -> None:
    cluster.nodes["queue-b"].env["TWOPC_FAILPOINTS"] = "participant.before_commit_applied=crash"
    await asyncio.to_thread(cluster.start)
    async with CoordinatorClient(cluster.coordinator_url, timeout=20, token=cluster.tokens["client"]) as client:
        committed = await client.execute(workload("stuck", True))
    assert committed["outcome"] == "committed" and committed["state"] != "committed"
    reader = cluster.tokens["reader"]

    async def in_doubt_at_the_coordinator() -> bool:
        families = await scrape(cluster.coordinator_url, reader)
        return (
            value(families, "twopc_in_doubt_transactions") == 1
            and value(families, "twopc_participant_up", participant="queue-b") == 0
        )

    await wait_until(in_doubt_at_the_coordinator, timeout=15)
    coordinator = await scrape(cluster.coordinator_url, reader)
    assert value(coordinator, "twopc_oldest_in_doubt_age_seconds") >= 0
    assert value(coordinator, "twopc_phase_two_retries_total", participant="queue-b") >= 1
    assert value(coordinator, "twopc_participant_health", participant="queue-b", status="unreachable") == 1
