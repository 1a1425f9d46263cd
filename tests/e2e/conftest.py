"""Real processes on loopback: a coordinator and two mock queues, killed and restarted."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.postgres.testing import scratch_database, server_dsn
from compose.localcluster import BankCluster, LocalCluster
from participant_sdk.client import CoordinatorClient
from twopc_core.testing import wait_until

QUEUES = ("queue-a", "queue-b")

# Short timeouts and retries so that recovery happens within a test's patience.
FAST = """
[transactions]
prepare_timeout_ms = 3000
phase_two_timeout_ms = 1000
commit_wait_ms = 2000
retry_base_ms = 20
retry_cap_ms = 300
"""


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """A cluster not yet started: a test may set a node's env (failpoints) first."""
    local = LocalCluster(tmp_path / "cluster", queues=QUEUES, coordinator_toml=FAST, inquiry_interval=0.3)
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture
async def bank_databases() -> AsyncIterator[dict[str, str]]:
    """A fresh PostgreSQL database per bank, dropped afterwards."""
    dsn = server_dsn()
    async with scratch_database(dsn, "bank_a") as a, scratch_database(dsn, "bank_b") as b:
        yield {"bank-a": a, "bank-b": b}


@pytest.fixture
def banks(tmp_path: Path, bank_databases: dict[str, str]) -> Iterator[BankCluster]:
    """A coordinator and two banks, not yet started: a test may arm failpoints first."""
    cluster = BankCluster(tmp_path / "cluster", bank_databases, coordinator_toml=FAST, inquiry_interval=0.3)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def client(cluster: LocalCluster) -> AsyncIterator[CoordinatorClient]:
    async with CoordinatorClient(cluster.coordinator_url, timeout=20, token=cluster.tokens["client"]) as c:
        yield c


def restart_disarmed(cluster: LocalCluster, node: str) -> None:
    """Start a node that crashed at its failpoint again, without the failpoint."""
    cluster.nodes[node].env.clear()
    cluster.restart(node)


@dataclass(frozen=True)
class Crash:
    """A row of a kill table: ``node`` crashes at ``failpoint`` during one transaction,
    is restarted without it, and then every participant holds ``outcome``, once."""

    node: str
    failpoint: str
    outcome: str

    def __str__(self) -> str:
        return f"{self.node}@{self.failpoint}"

    def arm(self, cluster: LocalCluster, node: str | None = None) -> None:
        """Set the failpoint in the node's environment (``node`` names it when the row
        names its role), before the cluster starts."""
        cluster.nodes[node or self.node].env["TWOPC_FAILPOINTS"] = f"{self.failpoint}=crash"


async def answer_through(crash: Crash, commit: Awaitable[dict[str, Any]]) -> dict[str, Any] | None:
    """The client's answer to the commit that the crash interrupts: none if the
    coordinator is the one that crashes (the connection drops), else the outcome the
    coordinator decided, which is already the row's."""
    if crash.node == "coordinator":
        with pytest.raises(aiohttp.ClientError):
            await commit
        return None
    answer = await commit
    assert answer["outcome"] == crash.outcome, answer
    return answer


def pending_branches(answer: dict[str, Any]) -> set[str]:
    """The branches whose phase 2 the coordinator had not seen acknowledged when it answered."""
    return {branch["name"] for branch in answer["branches"] if branch["pending"]}


def payloads(tag: str) -> list[dict[str, Any]]:
    return [{"name": q, "payload": {"items": [f"{tag}@{q}"]}} for q in QUEUES]


async def items(http: aiohttp.ClientSession, cluster: LocalCluster, queue: str) -> list[dict[str, Any]]:
    async with http.get(f"{cluster.url(queue)}/queue/items") as response:
        assert response.status == 200
        return (await response.json())["items"]


async def gtids_at(http: aiohttp.ClientSession, cluster: LocalCluster, queue: str) -> list[str]:
    return [item["gtid"] for item in await items(http, cluster, queue)]


async def in_doubt(http: aiohttp.ClientSession, cluster: LocalCluster, queue: str) -> int:
    async with http.get(f"{cluster.url(queue)}/healthz") as response:
        return int((await response.json())["in_doubt"])


async def settle(
    http: aiohttp.ClientSession, cluster: LocalCluster, client: CoordinatorClient, timeout: float = 30
) -> None:
    """Wait until no participant is in doubt or holds a prepared transaction (a bank says
    how many it holds) and the coordinator has nothing unfinished."""

    async def quiet() -> bool:
        for name in cluster.nodes:
            if name == "coordinator":
                continue
            async with http.get(f"{cluster.url(name)}/healthz") as response:
                health = await response.json()
            if health["in_doubt"] or health.get("prepared", {}).get("count"):
                return False
        for state in ("active", "preparing", "committing", "aborting"):
            if (await reader.list(state=state, limit=1))["transactions"]:
                return False
        return True

    # Listing every transaction is a reader's call, not a client's.
    async with CoordinatorClient(client.urls, timeout=20, token=cluster.tokens["reader"]) as reader:
        await wait_until(quiet, timeout=timeout, interval=0.1, message="every transaction to be finished everywhere")
