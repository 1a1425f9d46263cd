"""Kafka in global transactions, with real processes: a coordinator, a mock queue and the
events service on the real test broker, killed (by a crash failpoint or SIGKILL) and
restarted. Every test reads Kafka as a ``read_committed`` consumer would."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from adapters.kafka.testing import bootstrap_servers, create_topic, read_committed, unique_name
from participant_sdk.client import CoordinatorClient, CoordinatorError
from tests.e2e.conftest import FAST
from twopc.failpoints import CRASH_EXIT_CODE
from twopc.localcluster import LocalCluster
from twopc.supervisor import Node, free_port, twopc_command
from twopc.testing import wait_until

pytestmark = pytest.mark.slow

QUEUE = "queue-a"


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


@pytest.fixture
def cluster(tmp_path: Path, kafka: str, events_name: str) -> Iterator[LocalCluster]:
    """A coordinator, a mock queue and the events service, not yet started."""
    port = free_port()
    registration = f'[[participants]]\nname = "{events_name}"\nurl = "http://127.0.0.1:{port}/twopc"\n'
    registration += 'secret = "change-me"\n'
    local = LocalCluster(
        tmp_path / "cluster", queues=(QUEUE,), coordinator_toml=FAST + registration, inquiry_interval=0.3
    )
    local.ports["events"] = port
    local.nodes["events"] = Node(
        "events",
        twopc_command(
            "events",
            "serve",
            *("--name", events_name, "--port", str(port), "--bootstrap", kafka),
            *("--coordinator", local.coordinator_url, "--secret", local.secret),
            *("--data", str(local.directory / "events"), "--inquiry-interval", "0.3", "--shards", "2"),
        ),
        ready_url=f"http://127.0.0.1:{port}/healthz",
        log_path=local.directory / "events.log",
    )
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def client(cluster: LocalCluster) -> AsyncIterator[CoordinatorClient]:
    async with CoordinatorClient(cluster.coordinator_url, timeout=20) as c:
        yield c


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
    return [m.key.decode() for m in await read_committed(kafka, [topic]) if m.key is not None]


async def gtids_in_queue(http: aiohttp.ClientSession, cluster: LocalCluster) -> list[str]:
    async with http.get(f"{cluster.url(QUEUE)}/queue/items") as response:
        assert response.status == 200
        return [item["gtid"] for item in (await response.json())["items"]]


async def settle(http: aiohttp.ClientSession, cluster: LocalCluster, client: CoordinatorClient) -> None:
    """Wait until nothing is in doubt anywhere and the coordinator has nothing unfinished."""

    async def quiet() -> bool:
        for name in (QUEUE, "events"):
            async with http.get(f"{cluster.url(name)}/healthz") as response:
                if (await response.json())["in_doubt"]:
                    return False
        for state in ("active", "preparing", "committing", "aborting"):
            if (await client.list(state=state, limit=1))["transactions"]:
                return False
        return True

    await wait_until(quiet, timeout=60, interval=0.1, message="every transaction to be finished everywhere")


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

    await settle(http, cluster, client)
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
    async with http.post(f"{cluster.url('events')}/events", json=body) as response:
        assert response.status == 201, await response.text()
    assert await gtids_in_kafka(kafka, topic) == []  # staged and voted, not published
    await client.enlist(gtid, QUEUE, {"items": [gtid]})
    assert (await client.commit(gtid))["outcome"] == "committed"

    await settle(http, cluster, client)
    assert await gtids_in_kafka(kafka, topic) == [gtid]
    async with http.get(f"{cluster.url('events')}/events/{topic}") as response:
        assert [m["value"] for m in (await response.json())["messages"]] == [{"early": True}]


@pytest.mark.parametrize(
    "failpoint",
    [
        "participant.before_commit_applied",  # voted yes, killed before the commit reached Kafka
        "kafka.after_publish_before_marker",  # data and marker sent, Kafka transaction still open
        "kafka.after_publish_committed",  # Kafka committed, the answer never left
    ],
)
async def test_kafka_killed_during_its_commit_publishes_exactly_once_after_restart(
    cluster: LocalCluster,
    client: CoordinatorClient,
    http: aiohttp.ClientSession,
    kafka: str,
    topic: str,
    events_name: str,
    failpoint: str,
) -> None:
    cluster.nodes["events"].env["TWOPC_FAILPOINTS"] = f"{failpoint}=crash"
    cluster.start()
    messages = [{"topic": topic, "key": "same", "value": n} for n in range(5)]
    gtid, answer = await run_transaction(client, events_name, topic, kafka_messages=messages)
    assert answer["outcome"] == "committed"  # the decision is durable; Kafka's branch is pending
    assert cluster.nodes["events"].wait_exit() == CRASH_EXIT_CODE

    cluster.nodes["events"].env.clear()
    cluster.restart("events")
    await settle(http, cluster, client)
    read = await read_committed(kafka, [topic])
    assert [orjson.loads(m.value) for m in read] == [0, 1, 2, 3, 4]  # once each, in order
    assert await gtids_in_queue(http, cluster) == [gtid]


async def test_repeated_sigkills_of_kafka_under_load_keep_every_transaction_atomic(
    cluster: LocalCluster,
    client: CoordinatorClient,
    http: aiohttp.ClientSession,
    kafka: str,
    topic: str,
    events_name: str,
) -> None:
    cluster.start()
    told: dict[str, str] = {}
    stop = asyncio.Event()

    async def worker() -> None:
        while not stop.is_set():
            gtid = None
            try:
                gtid = (await client.begin(timeout_ms=20_000))["gtid"]
                await client.enlist(gtid, QUEUE, {"items": [gtid]})
                await client.enlist(gtid, events_name, {"messages": [{"topic": topic, "key": gtid, "value": 1}]})
                told[gtid] = (await client.commit(gtid))["outcome"]
            except (aiohttp.ClientError, CoordinatorError, TimeoutError):
                if gtid is not None:
                    told.setdefault(gtid, "unknown")

    workers = [asyncio.create_task(worker()) for _ in range(4)]
    try:
        for kill in range(3):
            target = sum(o == "committed" for o in told.values()) + 10
            await wait_until(
                lambda t=target: sum(o == "committed" for o in told.values()) >= t,
                timeout=60,
                message=f"10 more commits before kill {kill + 1}",
            )
            cluster.nodes["events"].kill(signal.SIGKILL)
            cluster.restart("events")
    finally:
        stop.set()
        await asyncio.gather(*workers)
    await settle(http, cluster, client)

    in_kafka = Counter(await gtids_in_kafka(kafka, topic))
    in_queue = Counter(await gtids_in_queue(http, cluster))
    assert set(in_kafka.values()) <= {1} and set(in_queue.values()) <= {1}  # exactly once
    assert set(in_kafka) == set(in_queue)  # atomic: at both or at neither
    committed = {g for g, o in told.items() if o == "committed"}
    aborted = {g for g, o in told.items() if o == "aborted"}
    assert len(committed) >= 30
    assert committed <= set(in_kafka)  # durable: what a client was told committed is published
    assert not aborted & set(in_kafka)


@pytest.mark.parametrize("failpoint", ["kafka.after_stage_before_marker", "kafka.after_stage_committed"])
async def test_kafka_killed_while_staging_aborts_everywhere_after_restart(
    cluster: LocalCluster,
    client: CoordinatorClient,
    http: aiohttp.ClientSession,
    kafka: str,
    topic: str,
    events_name: str,
    failpoint: str,
) -> None:
    cluster.nodes["events"].env["TWOPC_FAILPOINTS"] = f"{failpoint}=crash"
    cluster.start()
    _, answer = await run_transaction(client, events_name, topic)
    assert answer["outcome"] == "aborted"  # no vote came back
    assert cluster.nodes["events"].wait_exit() == CRASH_EXIT_CODE

    cluster.nodes["events"].env.clear()
    cluster.restart("events")  # staged (or not) before the crash: either way it learns the abort
    await settle(http, cluster, client)
    async with http.get(f"{cluster.url('events')}/healthz") as response:
        branches = (await response.json())["branches"]
    staged = failpoint == "kafka.after_stage_committed"
    assert branches == {"prepared": 0, "committed": 0, "aborted": 1 if staged else 0}
    assert await gtids_in_kafka(kafka, topic) == []
    assert await gtids_in_queue(http, cluster) == []
    assert (await run_transaction(client, events_name, topic))[1]["outcome"] == "committed"  # and it works on
