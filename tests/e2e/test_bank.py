"""The bank on real processes: a coordinator and two banks, each on its own PostgreSQL
database; transfers commit on both databases or on neither, through kills (the crashes
at a failpoint are one table, BANK_CRASHES)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import psycopg
import pytest

from adapters.postgres.bank import transfer
from compose.localcluster import BankCluster
from participant_sdk.client import CoordinatorClient
from tests.e2e.conftest import Crash, answer_through, restart_disarmed, settle
from twopc_core.failpoints import CRASH_EXIT_CODE

pytestmark = pytest.mark.slow

BANKS = ("bank-a", "bank-b")


@pytest.fixture
async def client(banks: BankCluster) -> AsyncIterator[CoordinatorClient]:
    async with CoordinatorClient(banks.coordinator_url, timeout=20, token=banks.tokens["client"]) as c:
        yield c


async def get(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def post(http: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, Any]:
    async with http.post(url, json=body) as response:
        return response.status, await response.json()


async def open_accounts(http: aiohttp.ClientSession, banks: BankCluster, accounts: dict[str, dict[str, int]]) -> None:
    for bank, balances in accounts.items():
        for account, balance in balances.items():
            status, body = await post(http, f"{banks.url(bank)}/accounts", {"id": account, "balance": balance})
            assert status == 201, body


async def balances(http: aiohttp.ClientSession, banks: BankCluster, bank: str) -> dict[str, int]:
    body = await get(http, f"{banks.url(bank)}/accounts")
    return {a["id"]: a["balance"] for a in body["accounts"]}


async def applied(http: aiohttp.ClientSession, banks: BankCluster, bank: str) -> list[str]:
    return [t["gtid"] for t in (await get(http, f"{banks.url(bank)}/transfers"))["transfers"]]


def prepared_in(dsn: str) -> list[str]:
    """Every prepared transaction in that database, whoever made it."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT gid FROM pg_prepared_xacts WHERE database = current_database()").fetchall()
    return [gid for (gid,) in rows]


async def test_a_transfer_commits_on_both_databases_and_a_refused_one_on_neither(
    banks: BankCluster, client: CoordinatorClient, http: aiohttp.ClientSession
) -> None:
    banks.start()
    await open_accounts(http, banks, {"bank-a": {"alice": 100}, "bank-b": {"bob": 5}})

    done = await transfer(client, ("bank-a", "alice"), ("bank-b", "bob"), 30)
    refused = await transfer(client, ("bank-a", "alice"), ("bank-b", "bob"), 71)  # alice has 70 left
    unknown = await transfer(client, ("bank-b", "bob"), ("bank-a", "nobody"), 1)

    assert done["outcome"] == "committed"
    assert refused["outcome"] == "aborted" and "insufficient funds" in refused["reason"]
    assert unknown["outcome"] == "aborted" and "no account 'nobody'" in unknown["reason"]
    await settle(http, banks, client)
    assert await balances(http, banks, "bank-a") == {"alice": 70}
    assert await balances(http, banks, "bank-b") == {"bob": 35}
    for bank in BANKS:
        assert await applied(http, banks, bank) == [done["gtid"]]
        assert prepared_in(banks.banks[bank]) == []


async def test_an_early_prepared_debit_and_a_credit_at_prepare_are_one_transaction(
    banks: BankCluster, client: CoordinatorClient, http: aiohttp.ClientSession
) -> None:
    banks.start()
    await open_accounts(http, banks, {"bank-a": {"alice": 50}, "bank-b": {"bob": 0}})
    gtid = (await client.begin())["gtid"]

    status, body = await post(
        http, f"{banks.url('bank-a')}/early-prepare", {"gtid": gtid, "account": "alice", "delta": -20}
    )
    assert (status, body) == (201, {"gtid": gtid, "branch": "bank-a", "vote": "yes"})
    assert prepared_in(banks.banks["bank-a"]) == [f"twopc:bank-a:{gtid}:bank-a"]
    await client.enlist(gtid, "bank-b", payload={"account": "bob", "delta": 20})
    answer = await client.commit(gtid)

    assert answer["outcome"] == "committed"
    assert {b["name"]: b["early"] for b in answer["branches"]} == {"bank-a": True, "bank-b": False}
    await settle(http, banks, client)
    assert await balances(http, banks, "bank-a") == {"alice": 30}
    assert await balances(http, banks, "bank-b") == {"bob": 20}


async def test_an_early_prepare_that_would_overdraw_is_refused_and_leaves_nothing(
    banks: BankCluster, client: CoordinatorClient, http: aiohttp.ClientSession
) -> None:
    banks.start()
    await open_accounts(http, banks, {"bank-a": {"alice": 10}})
    gtid = (await client.begin())["gtid"]

    status, body = await post(
        http, f"{banks.url('bank-a')}/early-prepare", {"gtid": gtid, "account": "alice", "delta": -11}
    )
    bad_status, bad = await post(http, f"{banks.url('bank-a')}/early-prepare", {"gtid": gtid, "account": "alice"})

    assert status == 409 and body["error"]["code"] == "vote_no"
    assert "insufficient funds" in body["error"]["message"]
    assert bad_status == 422 and "delta" in bad["error"]["message"]
    assert prepared_in(banks.banks["bank-a"]) == []
    assert await balances(http, banks, "bank-a") == {"alice": 10}


async def test_bad_requests_to_the_bank_are_4xx_json_naming_the_problem(
    banks: BankCluster, http: aiohttp.ClientSession
) -> None:
    banks.start()
    url = banks.url("bank-a")
    await open_accounts(http, banks, {"bank-a": {"alice": 1}})

    async with http.post(f"{url}/accounts", data=b"{not json") as response:
        assert response.status == 400 and (await response.json())["error"]["code"] == "invalid_json"
    assert (await post(http, f"{url}/accounts", {"id": "bob", "balance": -1}))[0] == 422
    assert (await post(http, f"{url}/accounts", {"id": "alice", "balance": 3}))[0] == 409
    async with http.get(f"{url}/accounts/carol") as response:
        assert response.status == 404 and "carol" in (await response.json())["error"]["message"]
    async with http.get(f"{url}/nowhere") as response:
        assert response.status == 404 and "error" in await response.json()


@dataclass(frozen=True)
class BankCrash(Crash):
    """``prepared_while_down``: the banks whose database holds the transfer prepared
    while the crashed node is down."""

    prepared_while_down: tuple[str, ...] = ()


BANK_CRASHES = [
    # PREPARE TRANSACTION happened, the vote never arrived: the abort reaches it after its restart.
    BankCrash("bank-b", "participant.after_prepare_before_reply", "aborted", ("bank-b",)),
    # Both voted yes, the decision is durable and never left the coordinator.
    BankCrash("coordinator", "coordinator.after_decision_logged", "committed", BANKS),
]


def gid(bank: str, gtid: str) -> str:
    return f"twopc:{bank}:{gtid}:{bank}"


@pytest.mark.parametrize("crash", BANK_CRASHES, ids=str)
async def test_a_node_killed_during_a_transfer_leaves_both_databases_with_its_outcome_once_restarted(
    banks: BankCluster, client: CoordinatorClient, http: aiohttp.ClientSession, crash: BankCrash
) -> None:
    crash.arm(banks)
    banks.start()
    await open_accounts(http, banks, {"bank-a": {"alice": 100}, "bank-b": {"bob": 0}})

    answer = await answer_through(crash, transfer(client, ("bank-a", "alice"), ("bank-b", "bob"), 25))
    assert banks.nodes[crash.node].wait_exit() == CRASH_EXIT_CODE
    held = {bank: prepared_in(banks.banks[bank]) for bank in crash.prepared_while_down}
    if answer is not None:
        gtid = answer["gtid"]
    else:  # the coordinator died before answering: the gtid is read from a prepared gid
        first = crash.prepared_while_down[0]
        gtid = held[first][0].removeprefix(f"twopc:{first}:").removesuffix(f":{first}")
    assert held == {bank: [gid(bank, gtid)] for bank in crash.prepared_while_down}

    restart_disarmed(banks, crash.node)
    await settle(http, banks, client)

    moved = 25 if crash.outcome == "committed" else 0
    assert await balances(http, banks, "bank-a") == {"alice": 100 - moved}
    assert await balances(http, banks, "bank-b") == {"bob": moved}
    for bank in BANKS:
        assert await applied(http, banks, bank) == ([gtid] if crash.outcome == "committed" else [])
        assert prepared_in(banks.banks[bank]) == []
