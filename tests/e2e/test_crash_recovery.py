"""Kill tests: real processes, killed by a crash failpoint or SIGKILL, then restarted.

Each test asserts the final state of every queue and of the coordinator. The crashes
at a failpoint are one table (QUEUE_CRASHES), run by one test.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field

import aiohttp
import pytest

from compose.localcluster import LocalCluster
from participant_sdk.client import CoordinatorClient, CoordinatorError
from tests.e2e.conftest import (
    QUEUES,
    Crash,
    answer_through,
    gtids_at,
    in_doubt,
    payloads,
    pending_branches,
    restart_disarmed,
    settle,
)
from twopc_core.failpoints import CRASH_EXIT_CODE
from twopc_core.testing import wait_until

pytestmark = pytest.mark.slow


async def begin_two(client: CoordinatorClient, tag: str) -> str:
    begun = await client.begin(participants=payloads(tag))
    return begun["gtid"]


@dataclass(frozen=True)
class QueueCrash(Crash):
    """``while_down``: what each other queue holds of the transaction while the crashed
    node is down (IN_DOUBT, COMMITTED or ABORTED), where that is certain."""

    while_down: Mapping[str, str] = field(default_factory=dict)


IN_DOUBT, COMMITTED, ABORTED = "in doubt", "committed", "aborted"
BOTH_IN_DOUBT = {"queue-a": IN_DOUBT, "queue-b": IN_DOUBT}

QUEUE_CRASHES = [
    # Both voted yes, nothing was decided: presumed abort.
    QueueCrash("coordinator", "coordinator.before_decision_logged", "aborted", BOTH_IN_DOUBT),
    # The decision is durable but never left the coordinator.
    QueueCrash("coordinator", "coordinator.after_decision_logged", "committed", BOTH_IN_DOUBT),
    # One commit went out (which one is a race), the other did not.
    QueueCrash("coordinator", "coordinator.after_first_commit_sent", "committed"),
    # Voted yes, killed before the commit was applied.
    QueueCrash("queue-b", "participant.before_commit_applied", "committed", {"queue-a": COMMITTED}),
    # Committed, killed before the answer left.
    QueueCrash("queue-a", "participant.after_commit_before_reply", "committed", {"queue-b": COMMITTED}),
    # Prepared, killed before its yes reached the coordinator: it learns the abort.
    QueueCrash("queue-b", "participant.after_prepare_before_reply", "aborted", {"queue-a": ABORTED}),
]


async def holds(http: aiohttp.ClientSession, cluster: LocalCluster, queue: str, gtid: str, expected: str) -> bool:
    """Whether ``queue`` holds ``gtid`` as ``expected`` says (the only transaction there)."""
    at, doubt = await gtids_at(http, cluster, queue), await in_doubt(http, cluster, queue)
    return (at, doubt) == {IN_DOUBT: ([], 1), COMMITTED: ([gtid], 0), ABORTED: ([], 0)}[expected]


@pytest.mark.parametrize("crash", QUEUE_CRASHES, ids=str)
async def test_a_node_crashed_during_a_transaction_leaves_both_queues_with_its_outcome_once_restarted(
    cluster: LocalCluster, client: CoordinatorClient, http: aiohttp.ClientSession, crash: QueueCrash
) -> None:
    crash.arm(cluster)
    cluster.start()
    gtid = await begin_two(client, crash.failpoint)
    answer = await answer_through(crash, client.commit(gtid))
    if answer is not None and crash.outcome == "committed":
        assert pending_branches(answer) == {crash.node}  # the decision is durable; the crashed queue's branch waits
    assert cluster.nodes[crash.node].wait_exit() == CRASH_EXIT_CODE
    for queue, expected in crash.while_down.items():
        await wait_until(
            lambda q=queue, e=expected: holds(http, cluster, q, gtid, e), message=f"{queue} to hold {gtid} {expected}"
        )

    restart_disarmed(cluster, crash.node)
    await settle(http, cluster, client)

    for queue in QUEUES:
        assert await gtids_at(http, cluster, queue) == ([gtid] if crash.outcome == "committed" else [])
    try:
        shown = await client.get(gtid)
    except CoordinatorError as exc:  # no record at all is presumed abort, if nothing was decided
        assert (exc.status, crash.failpoint) == (404, "coordinator.before_decision_logged")
    else:
        assert (shown["state"], shown["outcome"]) == (crash.outcome, crash.outcome)


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
