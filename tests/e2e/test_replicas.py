"""Coordinator replicas over one PostgreSQL log, as real processes: a replica killed or
paused at the worst moment, and what the others, the queues and the clients then see."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psycopg.conninfo
import pytest

from adapters.postgres.testing import scratch_database, server_dsn
from chaos.proxy import FaultProxy
from compose.localcluster import LocalCluster, coordinator_config, local_tokens
from compose.supervisor import Node, free_port, twopc_command
from participant_sdk.client import CoordinatorClient, CoordinatorError
from tests.e2e.conftest import FAST, QUEUES, gtids_at, in_doubt, payloads
from twopc_core.testing import wait_until

pytestmark = pytest.mark.slow

LEASE_MS = 1500
LEASE = LEASE_MS / 1000
#: How long a participant waits for one replica's answer to an inquiry before asking the
#: next (the SDK's default): what a paused replica costs an in-doubt branch.
INQUIRY_TIMEOUT = 10.0


@pytest.fixture
async def log_dsn() -> AsyncIterator[str]:
    """A fresh database for the replicas' shared log."""
    async with scratch_database(server_dsn(), "log") as dsn:
        yield dsn


@pytest.fixture
async def http(tmp_path: Path) -> AsyncIterator[aiohttp.ClientSession]:
    """A session that reads as the cluster's ``reader`` (every cluster of a test lives in
    ``tmp_path / "cluster"``, whose token files say which tokens it accepts)."""
    reader = local_tokens(tmp_path / "cluster")["reader"]
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {reader}"}) as session:
        yield session


@pytest.fixture
def replicas(tmp_path: Path, log_dsn: str) -> Iterator[LocalCluster]:
    """Replicas c1 and c2 and two queues told of both, not yet started."""
    cluster = LocalCluster(
        tmp_path / "cluster",
        queues=QUEUES,
        coordinator_toml=FAST,
        inquiry_interval=0.3,
        replicas=2,
        log_dsn=log_dsn,
        lease_ms=LEASE_MS,
    )
    try:
        yield cluster
    finally:
        cluster.stop()


async def transaction_at(http: aiohttp.ClientSession, url: str, gtid: str) -> tuple[int, dict[str, Any]]:
    """What the replica at ``url`` answers about ``gtid``: the status and the JSON body."""
    async with http.get(f"{url}/v1/transactions/{gtid}") as response:
        return response.status, await response.json()


async def outcome_at(http: aiohttp.ClientSession, url: str, gtid: str) -> str | None:
    """The outcome the replica at ``url`` gives: None while undecided; a transaction of
    which the log holds no record (nothing was decided) is presumed aborted."""
    status, body = await transaction_at(http, url, gtid)
    if status == 404 and body["error"]["code"] == "transaction_not_found":
        return "aborted"
    assert status == 200, body
    return body["outcome"]


async def holds_everywhere(http: aiohttp.ClientSession, cluster: LocalCluster, gtid: str, outcome: str) -> bool:
    """Whether every queue holds ``gtid`` as ``outcome`` says, with nothing in doubt."""
    for queue in QUEUES:
        expected = [gtid] if outcome == "committed" else []
        if await gtids_at(http, cluster, queue) != expected or await in_doubt(http, cluster, queue):
            return False
    return True


async def taken_over(http: aiohttp.ClientSession, url: str, node_id: str) -> str | None:
    """Which replica took ``node_id`` over, as the replica at ``url`` sees the cluster."""
    async with http.get(f"{url}/v1/cluster") as response:
        cluster = await response.json()
    return next(r["taken_over_by"] for r in cluster["replicas"] if r["node_id"] == node_id)


async def test_a_replica_killed_after_its_decision_has_every_branch_committed_by_another_within_lease_plus_5_s(
    replicas: LocalCluster, http: aiohttp.ClientSession
) -> None:
    replicas.nodes["c1"].env["TWOPC_FAILPOINTS"] = "coordinator.after_decision_logged=crash"
    replicas.start()
    async with CoordinatorClient(replicas.url("c1"), timeout=20, token=replicas.tokens["client"]) as c1:
        gtid = (await c1.begin(participants=payloads("after-decision")))["gtid"]
        with pytest.raises(aiohttp.ClientError):
            await c1.commit(gtid)
    crashed_at = time.monotonic()
    assert await asyncio.to_thread(replicas.nodes["c1"].wait_exit, 10) != 0

    await wait_until(
        lambda: holds_everywhere(http, replicas, gtid, "committed"),
        timeout=LEASE + 5,
        interval=0.1,
        message="another replica to commit every branch",
    )
    print(f"\nevery branch committed {time.monotonic() - crashed_at:.2f} s after the owner died")
    assert await taken_over(http, replicas.url("c2"), "c1") == "c2"
    assert await outcome_at(http, replicas.url("c2"), gtid) == "committed"


async def test_a_replica_killed_before_its_decision_has_the_transaction_aborted_everywhere(
    replicas: LocalCluster, http: aiohttp.ClientSession
) -> None:
    replicas.nodes["c1"].env["TWOPC_FAILPOINTS"] = "coordinator.before_decision_logged=crash"
    replicas.start()
    async with CoordinatorClient(replicas.url("c1"), timeout=20, token=replicas.tokens["client"]) as c1:
        gtid = (await c1.begin(participants=payloads("before-decision")))["gtid"]
        with pytest.raises(aiohttp.ClientError):
            await c1.commit(gtid)
    # Both voted yes before the crash: they are in doubt until the taker aborts.
    assert [await in_doubt(http, replicas, queue) for queue in QUEUES] == [1, 1]

    await wait_until(
        lambda: holds_everywhere(http, replicas, gtid, "aborted"),
        timeout=LEASE + 5,
        interval=0.1,
        message="another replica to abort every branch",
    )
    assert await outcome_at(http, replicas.url("c2"), gtid) == "aborted"


async def logged_state(dsn: str, gtid: str) -> str | None:
    """The state of ``gtid``'s record in the shared log (None if not there)."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute("SELECT state FROM twopc_transactions WHERE gtid = %s", (gtid,))
        row = await cur.fetchone()
    return row[0] if row is not None else None


async def test_a_paused_replica_resumed_after_the_takeover_commits_nothing_that_was_aborted(
    replicas: LocalCluster, http: aiohttp.ClientSession, log_dsn: str
) -> None:
    # The votes are in; the replica is held just before it writes COMMIT, then paused there
    # for longer than its lease: the other one takes over and aborts.
    replicas.nodes["c1"].env["TWOPC_FAILPOINTS"] = f"coordinator.before_decision_logged=1*delay({LEASE_MS * 3})"
    replicas.start()
    async with CoordinatorClient(replicas.url("c1"), timeout=30, token=replicas.tokens["client"]) as c1:
        gtid = (await c1.begin(participants=payloads("zombie")))["gtid"]
        commit = asyncio.create_task(c1.commit(gtid))

        # Paused between two log batches (the "preparing" record is in, the decision is
        # held): one paused in the midst of sending a batch holds its node row, and so
        # its takeover, until it resumes (the PostgreSQL log's writer says why).
        async def voted() -> bool:
            _, body = await transaction_at(http, replicas.url("c1"), gtid)
            votes = [b["state"] for b in body["branches"]]
            return votes == ["prepared", "prepared"] and await logged_state(log_dsn, gtid) == "preparing"

        await wait_until(voted, timeout=10, message="both votes in and the preparing record logged")
        replicas.nodes["c1"].kill(signal.SIGSTOP)
        try:
            # Nothing was decided, so nothing is in the log: the queues learn the abort by
            # asking, and their inquiry to the paused replica must time out first.
            await wait_until(
                lambda: holds_everywhere(http, replicas, gtid, "aborted"),
                timeout=LEASE + INQUIRY_TIMEOUT + 5,
                interval=0.1,
                message="the queues to learn the abort from the other replica",
            )
            assert await taken_over(http, replicas.url("c2"), "c1") == "c2"
        finally:
            replicas.nodes["c1"].kill(signal.SIGCONT)
        try:
            answer: dict[str, Any] | None = await commit
        except CoordinatorError as exc:
            assert exc.status == 503, exc  # fenced before it could say: retryable
            answer = None
    assert answer is None or answer["outcome"] == "aborted", answer

    async def ready_again() -> bool:
        async with http.get(f"{replicas.url('c1')}/readyz") as response:
            return response.status == 200

    await wait_until(ready_again, timeout=LEASE * 3 + 5, message="the resumed replica to join again")
    assert await outcome_at(http, replicas.url("c1"), gtid) == "aborted"
    assert await outcome_at(http, replicas.url("c2"), gtid) == "aborted"
    assert await holds_everywhere(http, replicas, gtid, "aborted")
    assert "fenced" in replicas.nodes["c1"].log_text()


async def test_a_retry_with_the_same_idempotency_key_at_another_replica_gets_the_same_transaction(
    replicas: LocalCluster, http: aiohttp.ClientSession
) -> None:
    replicas.start()
    async with (
        CoordinatorClient(replicas.url("c1"), timeout=20, token=replicas.tokens["client"]) as c1,
        CoordinatorClient(replicas.url("c2"), timeout=20, token=replicas.tokens["client"]) as c2,
    ):
        first = await c1.execute(payloads("keyed"), idempotency_key="order-1")
        again = await c2.execute(payloads("keyed"), idempotency_key="order-1")

    assert first["outcome"] == "committed"
    assert again["gtid"] == first["gtid"]
    assert again["outcome"] == "committed"
    for queue in QUEUES:
        assert await gtids_at(http, replicas, queue) == [first["gtid"]]


async def test_a_key_whose_replica_died_before_committing_is_found_by_another_after_the_takeover(
    replicas: LocalCluster, http: aiohttp.ClientSession
) -> None:
    replicas.start()
    async with CoordinatorClient(replicas.url("c1"), timeout=20, token=replicas.tokens["client"]) as c1:
        begun = await c1.begin(participants=payloads("orphan"), idempotency_key="order-2")
    replicas.nodes["c1"].kill()
    await asyncio.to_thread(replicas.nodes["c1"].wait_exit, 10)

    async def begun_at_c2() -> dict[str, Any] | None:
        async with CoordinatorClient(replicas.url("c2"), timeout=20, token=replicas.tokens["client"]) as c2:
            try:
                return await c2.begin(participants=payloads("orphan"), idempotency_key="order-2")
            except CoordinatorError as exc:
                assert exc.status == 503, exc  # the owner's lease has not run out yet
                return None

    again = await wait_until(begun_at_c2, timeout=LEASE + 5, interval=0.2, message="c2 to answer for the key")
    assert again["gtid"] == begun["gtid"]
    assert await outcome_at(http, replicas.url("c2"), begun["gtid"]) == "aborted"


async def test_an_inquiry_at_another_replica_gets_the_right_answer_at_every_moment(
    replicas: LocalCluster, http: aiohttp.ClientSession
) -> None:
    replicas.nodes["c1"].env["TWOPC_FAILPOINTS"] = "coordinator.before_decision_logged=1*delay(1000)"
    replicas.start()
    c1_url, c2_url = replicas.url("c1"), replicas.url("c2")
    async with CoordinatorClient(c1_url, timeout=20, token=replicas.tokens["client"]) as c1:
        gtid = (await c1.begin(participants=payloads("asked")))["gtid"]
        assert await outcome_at(http, c2_url, gtid) is None  # alive, undecided: not "aborted"
        commit = asyncio.create_task(c1.commit(gtid))
        seen: set[str | None] = set()
        while not commit.done():  # every answer while the owner decides
            seen.add(await outcome_at(http, c2_url, gtid))
        assert (await commit)["outcome"] == "committed"
        assert seen <= {None, "committed"}, seen
        assert None in seen  # it was asked while undecided
        assert await outcome_at(http, c2_url, gtid) == "committed"

        # The owner dies undecided: until its lease runs out the answer is "ask again",
        # never "aborted"; after it, aborted.
        orphan = (await c1.begin(participants=payloads("orphan")))["gtid"]
    replicas.nodes["c1"].kill()
    await asyncio.to_thread(replicas.nodes["c1"].wait_exit, 10)
    died_at = time.monotonic()
    answers: list[tuple[float, int, str | None]] = []

    async def settled() -> bool:
        status, body = await transaction_at(http, c2_url, orphan)
        outcome = body.get("outcome") if status == 200 else body["error"]["code"]
        answers.append((time.monotonic() - died_at, status, outcome))
        return (status, outcome) in ((200, "aborted"), (404, "transaction_not_found"))  # presumed abort

    await wait_until(settled, timeout=LEASE + 5, interval=0.05, message="c2 to answer for the dead owner")
    before = [(at, status, outcome) for at, status, outcome in answers[:-1]]
    retry = {(503, "replica_unavailable"), (503, "not_ready")}  # "ask again", while it may still decide
    assert all((status, outcome) in retry for _, status, outcome in before), answers
    assert answers[-1][0] >= LEASE * 0.5, answers  # not before the owner could have been fenced


async def test_a_second_replica_with_a_node_id_in_use_refuses_to_start_and_says_why(
    replicas: LocalCluster, tmp_path: Path, log_dsn: str, http: aiohttp.ClientSession
) -> None:
    replicas.start()
    port = free_port()
    config = tmp_path / "twin.toml"
    config.write_text(coordinator_config(port, tmp_path / "twin.db", {}, "s", node_id="c1", log_dsn=log_dsn))
    argv = twopc_command("serve", "--config", str(config))
    twin = Node("twin", argv, ready_url=f"http://127.0.0.1:{port}/readyz", log_path=tmp_path / "twin.log")
    twin.start()
    try:
        code = await asyncio.to_thread(twin.wait_exit, LEASE * 3 + 20)
    finally:
        twin.stop()
    assert code != 0
    assert "node id 'c1' is in use" in twin.log_text(), twin.log_text()
    async with http.get(f"{replicas.url('c1')}/readyz") as response:
        assert response.status == 200  # the first one goes on


@pytest.fixture
async def log_proxy(log_dsn: str) -> AsyncIterator[tuple[FaultProxy, str]]:
    """A fault proxy in front of the log's server, and the log's DSN through it."""
    target = int(psycopg.conninfo.conninfo_to_dict(log_dsn)["port"] or 5432)
    port = free_port()
    proxy = FaultProxy(port, target)
    await proxy.start()
    try:
        yield proxy, psycopg.conninfo.make_conninfo(log_dsn, port=port)
    finally:
        await proxy.close()


async def test_a_replica_cut_off_from_its_log_is_not_ready_refuses_new_work_and_never_says_aborted(
    tmp_path: Path, log_proxy: tuple[FaultProxy, str], http: aiohttp.ClientSession
) -> None:
    proxy, dsn = log_proxy
    cluster = LocalCluster(tmp_path / "cluster", queues=QUEUES, coordinator_toml=FAST, log_dsn=dsn, lease_ms=LEASE_MS)
    url = cluster.coordinator_url
    try:
        await asyncio.to_thread(cluster.start)  # the proxy runs on this loop: do not block it
        async with CoordinatorClient(url, timeout=20, token=cluster.tokens["client"]) as client:
            gtid = (await client.begin(participants=payloads("cut")))["gtid"]
            proxy.set_cut(True)

            async def not_ready() -> bool:
                async with http.get(f"{url}/readyz") as response:
                    return response.status == 503

            await wait_until(not_ready, timeout=LEASE + 5, message="the replica to say it is not ready")
            with pytest.raises(CoordinatorError) as refused:
                await client.begin(participants=payloads("refused"))
            status, body = await transaction_at(http, url, gtid)
            proxy.set_cut(False)

            async def ready() -> bool:
                async with http.get(f"{url}/readyz") as response:
                    return response.status == 200

            await wait_until(ready, timeout=LEASE * 3 + 10, message="the replica to be ready once the log answers")
            done = await client.execute(payloads("after"))
    finally:
        cluster.stop()

    assert refused.value.status == 503
    assert refused.value.code == "not_ready", refused.value
    assert status == 503 or body["outcome"] is None, body  # its own undecided work: never "aborted"
    assert done["outcome"] == "committed"
