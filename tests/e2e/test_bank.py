"""The bank on real processes: a coordinator and two banks, each on its own PostgreSQL
database; transfers commit on both databases or on neither, through kills."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import psycopg
import pytest

from adapters.postgres.bank import transfer
from compose.localcluster import BankCluster
from participant_sdk.client import CoordinatorClient
from tests.e2e.conftest import settle
from twopc_core.failpoints import CRASH_EXIT_CODE

pytestmark = pytest.mark.slow

BANKS = ("bank-a", "bank-b")


@pytest.fixture
async def client(banks: BankCluster) -> AsyncIterator[CoordinatorClient]:
    async with CoordinatorClient(banks.coordinator_url, timeout=20) as c:
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


async def test_a_bank_killed_after_prepare_before_its_vote_arrives_is_resolved_to_the_abort(
    banks: BankCluster, client: CoordinatorClient, http: aiohttp.ClientSession
) -> None:
    banks.nodes["bank-b"].env["TWOPC_FAILPOINTS"] = "participant.after_prepare_before_reply=crash"
    banks.start()
    await open_accounts(http, banks, {"bank-a": {"alice": 100}, "bank-b": {"bob": 0}})

    answer = await transfer(client, ("bank-a", "alice"), ("bank-b", "bob"), 40)

    assert answer["outcome"] == "aborted"  # the vote never arrived
    assert banks.nodes["bank-b"].wait_exit() == CRASH_EXIT_CODE
    (gid,) = prepared_in(banks.banks["bank-b"])  # PREPARE TRANSACTION happened
    assert gid == f"twopc:bank-b:{answer['gtid']}:bank-b"

    banks.nodes["bank-b"].env.clear()
    banks.restart("bank-b")
    await settle(http, banks, client)
    assert await balances(http, banks, "bank-a") == {"alice": 100}
    assert await balances(http, banks, "bank-b") == {"bob": 0}
    assert prepared_in(banks.banks["bank-b"]) == []


async def test_a_coordinator_killed_after_the_decision_commits_both_databases_after_restart(
    banks: BankCluster, client: CoordinatorClient, http: aiohttp.ClientSession
) -> None:
    banks.nodes["coordinator"].env["TWOPC_FAILPOINTS"] = "coordinator.after_decision_logged=crash"
    banks.start()
    await open_accounts(http, banks, {"bank-a": {"alice": 100}, "bank-b": {"bob": 0}})

    with pytest.raises(aiohttp.ClientError):
        await transfer(client, ("bank-a", "alice"), ("bank-b", "bob"), 25)
    assert banks.nodes["coordinator"].wait_exit() == CRASH_EXIT_CODE
    assert all(len(prepared_in(dsn)) == 1 for dsn in banks.banks.values())  # both voted yes

    banks.nodes["coordinator"].env.clear()
    banks.restart("coordinator")
    await settle(http, banks, client)

    assert await balances(http, banks, "bank-a") == {"alice": 75}
    assert await balances(http, banks, "bank-b") == {"bob": 25}
    assert all(prepared_in(dsn) == [] for dsn in banks.banks.values())
    gtids = [await applied(http, banks, bank) for bank in BANKS]
    assert gtids[0] == gtids[1] and len(gtids[0]) == 1
