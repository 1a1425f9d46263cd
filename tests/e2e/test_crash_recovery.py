"""Kill tests: real processes, killed by a crash failpoint or SIGKILL, then restarted.

Each test asserts the final state of every queue and of the coordinator.
"""

from __future__ import annotations

import asyncio
import signal

import aiohttp
import pytest

from compose.localcluster import LocalCluster
from participant_sdk.client import CoordinatorClient, CoordinatorError
from tests.e2e.conftest import QUEUES, gtids_at, in_doubt, payloads, restart_disarmed, settle
from twopc_core.failpoints import CRASH_EXIT_CODE

pytestmark = pytest.mark.slow


async def begin_two(client: CoordinatorClient, tag: str) -> str:
    begun = await client.begin(participants=payloads(tag))
    return begun["gtid"]


async def test_coordinator_crash_before_the_decision_aborts_everywhere(
    cluster: LocalCluster, client: CoordinatorClient, http: aiohttp.ClientSession
) -> None:
    cluster.nodes["coordinator"].env["TWOPC_FAILPOINTS"] = "coordinator.before_decision_logged=crash"
    cluster.start()
    gtid = await begin_two(client, "doomed")
    with pytest.raises(aiohttp.ClientError):
        await client.commit(gtid)
    assert cluster.nodes["coordinator"].wait_exit() == CRASH_EXIT_CODE
    assert [await in_doubt(http, cluster, q) for q in QUEUES] == [1, 1]  # both voted yes

    restart_disarmed(cluster, "coordinator")
    await settle(http, cluster, client)

    for queue in QUEUES:
        assert await gtids_at(http, cluster, queue) == []
    try:
        assert (await client.get(gtid))["outcome"] == "aborted"
    except CoordinatorError as exc:  # no record at all is presumed abort
        assert exc.status == 404


async def test_coordinator_crash_after_the_decision_commits_everywhere_once(
    cluster: LocalCluster, client: CoordinatorClient, http: aiohttp.ClientSession
) -> None:
    cluster.nodes["coordinator"].env["TWOPC_FAILPOINTS"] = "coordinator.after_decision_logged=crash"
    cluster.start()
    gtid = await begin_two(client, "decided")
    with pytest.raises(aiohttp.ClientError):
        await client.commit(gtid)
    assert cluster.nodes["coordinator"].wait_exit() == CRASH_EXIT_CODE
    for queue in QUEUES:
        assert await gtids_at(http, cluster, queue) == []  # the decision never left the coordinator

    restart_disarmed(cluster, "coordinator")
    await settle(http, cluster, client)

    for queue in QUEUES:
        assert await gtids_at(http, cluster, queue) == [gtid]
    shown = await client.get(gtid)
    assert (shown["state"], shown["outcome"]) == ("committed", "committed")


async def test_coordinator_crash_after_the_first_commit_finishes_the_rest_once(
    cluster: LocalCluster, client: CoordinatorClient, http: aiohttp.ClientSession
) -> None:
    cluster.nodes["coordinator"].env["TWOPC_FAILPOINTS"] = "coordinator.after_first_commit_sent=crash"
    cluster.start()
    gtid = await begin_two(client, "half")
    with pytest.raises(aiohttp.ClientError):
        await client.commit(gtid)
    assert cluster.nodes["coordinator"].wait_exit() == CRASH_EXIT_CODE

    restart_disarmed(cluster, "coordinator")
    await settle(http, cluster, client)
    for queue in QUEUES:
        assert await gtids_at(http, cluster, queue) == [gtid]


async def test_participant_killed_after_voting_yes_applies_the_commit_once_after_restart(
    cluster: LocalCluster, client: CoordinatorClient, http: aiohttp.ClientSession
) -> None:
    cluster.nodes["queue-b"].env["TWOPC_FAILPOINTS"] = "participant.before_commit_applied=crash"
    cluster.start()
    gtid = await begin_two(client, "b-dies")
    answer = await client.commit(gtid)
    # The decision is durable, so the client hears committed, with queue-b still pending.
    assert answer["outcome"] == "committed"
    assert {b["name"]: b["pending"] for b in answer["branches"]} == {"queue-a": False, "queue-b": True}
    assert cluster.nodes["queue-b"].wait_exit() == CRASH_EXIT_CODE

    restart_disarmed(cluster, "queue-b")
    await settle(http, cluster, client)
    for queue in QUEUES:
        assert await gtids_at(http, cluster, queue) == [gtid]


async def test_participant_killed_after_committing_but_before_replying_commits_once(
    cluster: LocalCluster, client: CoordinatorClient, http: aiohttp.ClientSession
) -> None:
    cluster.nodes["queue-a"].env["TWOPC_FAILPOINTS"] = "participant.after_commit_before_reply=crash"
    cluster.start()
    gtid = await begin_two(client, "a-dies")
    answer = await client.commit(gtid)
    assert answer["outcome"] == "committed"
    assert cluster.nodes["queue-a"].wait_exit() == CRASH_EXIT_CODE

    restart_disarmed(cluster, "queue-a")
    await settle(http, cluster, client)
    for queue in QUEUES:
        assert await gtids_at(http, cluster, queue) == [gtid]


async def test_participant_killed_before_its_yes_reaches_the_coordinator_learns_the_abort(
    cluster: LocalCluster, client: CoordinatorClient, http: aiohttp.ClientSession
) -> None:
    cluster.nodes["queue-b"].env["TWOPC_FAILPOINTS"] = "participant.after_prepare_before_reply=crash"
    cluster.start()
    gtid = await begin_two(client, "lost-vote")
    answer = await client.commit(gtid)
    assert answer["outcome"] == "aborted"
    assert cluster.nodes["queue-b"].wait_exit() == CRASH_EXIT_CODE

    restart_disarmed(cluster, "queue-b")
    await settle(http, cluster, client)  # queue-b was prepared: it asks and hears "aborted"
    for queue in QUEUES:
        assert await gtids_at(http, cluster, queue) == []


async def test_the_same_commit_retried_by_the_client_is_one_transaction(
    cluster: LocalCluster, client: CoordinatorClient, http: aiohttp.ClientSession
) -> None:
    cluster.start()
    gtid = await begin_two(client, "retried")
    answers = await asyncio.gather(*(client.commit(gtid) for _ in range(5)))
    assert {a["outcome"] for a in answers} == {"committed"}
    executed = [await client.execute(payloads("keyed"), idempotency_key="client-retry-1") for _ in range(3)]
    assert len({e["gtid"] for e in executed}) == 1
    for queue in QUEUES:
        assert sorted(await gtids_at(http, cluster, queue)) == sorted([gtid, executed[0]["gtid"]])


async def test_execute_retried_after_a_coordinator_crash_is_still_one_transaction(
    cluster: LocalCluster, client: CoordinatorClient, http: aiohttp.ClientSession
) -> None:
    cluster.nodes["coordinator"].env["TWOPC_FAILPOINTS"] = "coordinator.after_decision_logged=crash"
    cluster.start()
    with pytest.raises(aiohttp.ClientError):
        await client.execute(payloads("retry-after-crash"), idempotency_key="order-1")
    assert cluster.nodes["coordinator"].wait_exit() == CRASH_EXIT_CODE
    restart_disarmed(cluster, "coordinator")
    again = await client.execute(payloads("retry-after-crash"), idempotency_key="order-1")
    assert again["outcome"] == "committed"
    await settle(http, cluster, client)
    for queue in QUEUES:
        assert await gtids_at(http, cluster, queue) == [again["gtid"]]


async def test_sigkill_of_the_coordinator_under_load_keeps_every_transaction_atomic(
    cluster: LocalCluster, client: CoordinatorClient, http: aiohttp.ClientSession
) -> None:
    cluster.start()
    told: dict[str, str] = {}
    stop = asyncio.Event()

    async def worker(n: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                begun = await client.begin(participants=payloads(f"w{n}-{i}"))
            except (aiohttp.ClientError, CoordinatorError):
                return
            try:
                answer = await client.commit(begun["gtid"])
                told[begun["gtid"]] = answer["outcome"]
            except (aiohttp.ClientError, CoordinatorError):
                told[begun["gtid"]] = "unknown"
                return

    workers = [asyncio.create_task(worker(n)) for n in range(8)]
    from twopc_core.testing import wait_until

    await wait_until(lambda: sum(o == "committed" for o in told.values()) >= 40, timeout=30, message="load")
    cluster.nodes["coordinator"].kill(signal.SIGKILL)
    stop.set()
    await asyncio.gather(*workers)
    cluster.restart("coordinator")
    await settle(http, cluster, client)

    at_a = await gtids_at(http, cluster, "queue-a")
    at_b = await gtids_at(http, cluster, "queue-b")
    assert len(at_a) == len(set(at_a)) and len(at_b) == len(set(at_b))  # exactly once
    assert set(at_a) == set(at_b)  # atomic: every transaction at both or at neither
    committed = {g for g, o in told.items() if o == "committed"}
    aborted = {g for g, o in told.items() if o == "aborted"}
    assert committed <= set(at_a)  # durable: what a client was told committed is committed
    assert not aborted & set(at_a)
