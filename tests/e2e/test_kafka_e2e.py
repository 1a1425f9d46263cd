"""Kafka in global transactions, with real processes: a coordinator, a mock queue, the
events service on the real test broker (and, under load, a bank on PostgreSQL), killed
by a crash failpoint or SIGKILL and restarted. Kafka is read as a ``read_committed``
consumer would."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from adapters.kafka.testing import bootstrap_servers, create_topic, read_committed, unique_name
from adapters.postgres.testing import scratch_database, server_dsn
from compose.localcluster import LocalCluster, Service
from participant_sdk.client import CoordinatorClient, CoordinatorError
from tests.e2e.conftest import FAST, Crash, pending_branches, restart_disarmed, settle
from twopc_core.failpoints import CRASH_EXIT_CODE
from twopc_core.testing import wait_until

pytestmark = pytest.mark.slow

QUEUE = "queue-a"
BANK = "bank"


@pytest.fixture(scope="module")
def kafka() -> str:
    return bootstrap_servers()


@pytest.fixture
async def topic(kafka: str) -> str:
    return await create_topic(kafka, unique_name("e2e"), partitions=2)


@pytest.fixture
def events_name() -> str:
    # Its own name per test: its own stage topic and transactional ids on the shared broker.
    return unique_name("events")


def kafka_cluster(directory: Path, kafka: str, events_name: str, bank_dsn: str | None = None) -> LocalCluster:
    """A coordinator, a mock queue, the events service and, given a database, a bank."""
    services = [Service(events_name, "events", ("--bootstrap", kafka, "--shards", "2"))]
    if bank_dsn is not None:
        services.append(Service(BANK, "bank", ("--dsn", bank_dsn)))
    return LocalCluster(directory, queues=(QUEUE,), services=services, coordinator_toml=FAST, inquiry_interval=0.3)


@pytest.fixture
def cluster(tmp_path: Path, kafka: str, events_name: str) -> Iterator[LocalCluster]:
    """A coordinator, a mock queue and the events service, not yet started."""
    local = kafka_cluster(tmp_path / "cluster", kafka, events_name)
    try:
        yield local
    finally:
        local.stop()


async def run_transaction(
    client: CoordinatorClient, events_name: str, topic: str, *, kafka_messages: list[Any] | None = None
) -> tuple[str, dict[str, Any]]:
    """Begin, enlist the queue and Kafka (each carrying the gtid), commit."""
    gtid = (await client.begin(timeout_ms=20_000))["gtid"]
    messages = kafka_messages or [{"topic": topic, "key": gtid, "value": {"gtid": gtid}}]
    await client.enlist(gtid, QUEUE, {"items": [gtid]})
    await client.enlist(gtid, events_name, {"messages": messages})
    return gtid, await client.commit(gtid)


async def gtids_in_kafka(kafka: str, topic: str) -> list[str]:
    return [m.key.decode() for m in await read_committed(kafka, [topic], settled=True) if m.key is not None]


async def gtids_in_queue(http: aiohttp.ClientSession, cluster: LocalCluster) -> list[str]:
    async with http.get(f"{cluster.url(QUEUE)}/queue/items") as response:
        assert response.status == 200
        return [item["gtid"] for item in (await response.json())["items"]]


async def test_a_transaction_across_kafka_and_a_queue_is_all_or_nothing(
    cluster: LocalCluster,
    client: CoordinatorClient,
    http: aiohttp.ClientSession,
    kafka: str,
    topic: str,
    events_name: str,
) -> None:
    cluster.start()
    committed, answer = await run_transaction(client, events_name, topic)
    assert answer["outcome"] == "committed"

    # Kafka would refuse the message (no such topic): Kafka votes no, the queue's item goes too.
    refused = [{"topic": unique_name("missing"), "value": 1}]
    kafka_no, answer = await run_transaction(client, events_name, topic, kafka_messages=refused)
    assert answer["outcome"] == "aborted"

    # The queue votes no: Kafka's staged message is never published.
    async with http.post(f"{cluster.url(QUEUE)}/queue/faults", json={"vote": "no"}) as response:
        assert response.status == 200
    queue_no, answer = await run_transaction(client, events_name, topic)
    assert answer["outcome"] == "aborted"

    await settle(http, cluster, client, timeout=60)
    assert await gtids_in_kafka(kafka, topic) == [committed]
    assert await gtids_in_queue(http, cluster) == [committed]
    assert {kafka_no, queue_no}.isdisjoint(await gtids_in_kafka(kafka, topic))


async def test_early_prepare_through_the_events_endpoint_commits_with_the_queue(
    cluster: LocalCluster,
    client: CoordinatorClient,
    http: aiohttp.ClientSession,
    kafka: str,
    topic: str,
    events_name: str,
) -> None:
    cluster.start()
    gtid = (await client.begin(timeout_ms=20_000))["gtid"]
    body = {"gtid": gtid, "messages": [{"topic": topic, "key": gtid, "value": {"early": True}}]}
    async with http.post(f"{cluster.url(events_name)}/events", json=body) as response:
        assert response.status == 201, await response.text()
    assert await gtids_in_kafka(kafka, topic) == []  # staged and voted, not published
    await client.enlist(gtid, QUEUE, {"items": [gtid]})
    assert (await client.commit(gtid))["outcome"] == "committed"

    await settle(http, cluster, client, timeout=60)
    assert await gtids_in_kafka(kafka, topic) == [gtid]
    async with http.get(f"{cluster.url(events_name)}/events/{topic}") as response:
        assert [m["value"] for m in (await response.json())["messages"]] == [{"early": True}]


@dataclass(frozen=True)
class EventsCrash(Crash):
    """A crash of the events service (the row's node is its role, "events").
    ``remembered``: whether the restarted service knows the branch (from its log, or
    from a stage it finds in Kafka), and so counts it among the finished ones."""

    remembered: bool = True


EVENTS_CRASHES = [
    # Voted yes, killed before the commit reached Kafka.
    EventsCrash("events", "participant.before_commit_applied", "committed"),
    # Data and marker sent, the Kafka transaction still open.
    EventsCrash("events", "kafka.after_publish_before_marker", "committed"),
    # Kafka committed, the answer never left.
    EventsCrash("events", "kafka.after_publish_committed", "committed"),
    # Killed while staging, before the stage was committed: no vote, nothing to find.
    EventsCrash("events", "kafka.after_stage_before_marker", "aborted", remembered=False),
    # The stage committed in Kafka, no vote came back: found at restart, and aborted.
    EventsCrash("events", "kafka.after_stage_committed", "aborted"),
]


@pytest.mark.parametrize("crash", EVENTS_CRASHES, ids=str)
async def test_kafka_killed_during_a_transaction_holds_its_outcome_exactly_once_after_restart(
    cluster: LocalCluster,
    client: CoordinatorClient,
    http: aiohttp.ClientSession,
    kafka: str,
    topic: str,
    events_name: str,
    crash: EventsCrash,
) -> None:
    crash.arm(cluster, events_name)
    cluster.start()
    messages = [{"topic": topic, "key": "same", "value": n} for n in range(5)]
    gtid, answer = await run_transaction(client, events_name, topic, kafka_messages=messages)
    assert answer["outcome"] == crash.outcome  # when staging: no vote came back
    if crash.outcome == "committed":
        assert pending_branches(answer) == {events_name}  # the decision is durable; Kafka's branch waits
    assert cluster.nodes[events_name].wait_exit() == CRASH_EXIT_CODE

    restart_disarmed(cluster, events_name)
    await settle(http, cluster, client, timeout=60)

    committed = crash.outcome == "committed"
    read = await read_committed(kafka, [topic], settled=True)
    assert [orjson.loads(m.value) for m in read] == ([0, 1, 2, 3, 4] if committed else [])  # once each, in order
    assert await gtids_in_queue(http, cluster) == ([gtid] if committed else [])
    async with http.get(f"{cluster.url(events_name)}/healthz") as response:
        branches = (await response.json())["branches"]
    finished = {"prepared": 0, "committed": 0, "aborted": 0}
    if crash.remembered:
        finished[crash.outcome] += 1
    assert branches == finished
    assert (await run_transaction(client, events_name, topic))[1]["outcome"] == "committed"  # and it works on


@pytest.fixture
async def bank_dsn() -> AsyncIterator[str]:
    async with scratch_database(server_dsn(), "kafka_bank") as dsn:
        yield dsn


async def test_repeated_sigkills_keep_kafka_a_queue_and_postgres_atomic(
    tmp_path: Path, kafka: str, topic: str, events_name: str, bank_dsn: str, http: aiohttp.ClientSession
) -> None:
    cluster = kafka_cluster(tmp_path / "cluster", kafka, events_name, bank_dsn)
    try:
        cluster.start()
        async with http.post(f"{cluster.url(BANK)}/accounts", json={"id": "sales", "balance": 0}) as response:
            assert response.status == 201
        async with CoordinatorClient(cluster.coordinator_url, timeout=20, token=cluster.tokens["client"]) as client:
            victims = [events_name, QUEUE, events_name, BANK]
            told = await run_load_with_kills(cluster, client, events_name, topic, victims)
            await settle(http, cluster, client, timeout=60)
        in_kafka = Counter(await gtids_in_kafka(kafka, topic))
        in_queue = Counter(await gtids_in_queue(http, cluster))
        async with http.get(f"{cluster.url(BANK)}/transfers") as response:
            in_bank = Counter(t["gtid"] for t in (await response.json())["transfers"])
        async with http.get(f"{cluster.url(BANK)}/accounts/sales") as response:
            balance = (await response.json())["balance"]
    finally:
        cluster.stop()

    assert {1} >= set(in_kafka.values()) | set(in_queue.values()) | set(in_bank.values())  # exactly once
    assert set(in_kafka) == set(in_queue) == set(in_bank)  # atomic: everywhere or nowhere
    assert balance == len(in_bank)  # each committed transaction credited the account once
    committed = {g for g, o in told.items() if o == "committed"}
    aborted = {g for g, o in told.items() if o == "aborted"}
    assert len(committed) >= 40
    assert committed <= set(in_kafka)  # durable: what a client was told committed is everywhere
    assert not aborted & set(in_kafka)


async def run_load_with_kills(
    cluster: LocalCluster, client: CoordinatorClient, events_name: str, topic: str, victims: list[str]
) -> dict[str, str]:
    """Four clients run transactions across every participant; after each ten more
    commits, the next victim is SIGKILLed and restarted. Returns what each client heard."""
    told: dict[str, str] = {}
    stop = asyncio.Event()
    participants = [n for n in (QUEUE, events_name, BANK) if n != BANK or BANK in cluster.nodes]

    async def worker() -> None:
        while not stop.is_set():
            gtid = None
            try:
                gtid = (await client.begin(timeout_ms=20_000))["gtid"]
                payloads = {
                    QUEUE: {"items": [gtid]},
                    events_name: {"messages": [{"topic": topic, "key": gtid, "value": 1}]},
                    BANK: {"account": "sales", "delta": 1},
                }
                for name in participants:
                    await client.enlist(gtid, name, payloads[name])
                told[gtid] = (await client.commit(gtid))["outcome"]
            except (aiohttp.ClientError, CoordinatorError, TimeoutError):
                if gtid is not None:
                    told.setdefault(gtid, "unknown")

    workers = [asyncio.create_task(worker()) for _ in range(4)]
    try:
        for victim in victims:
            target = sum(o == "committed" for o in told.values()) + 10
            await wait_until(
                lambda t=target: sum(o == "committed" for o in told.values()) >= t,
                timeout=60,
                message=f"10 more commits before killing {victim}",
            )
            cluster.nodes[victim].kill(signal.SIGKILL)
            # In a thread: the clients keep running (and failing) while the victim is down.
            await asyncio.to_thread(cluster.restart, victim)
    finally:
        stop.set()
        await asyncio.gather(*workers)
    return told
