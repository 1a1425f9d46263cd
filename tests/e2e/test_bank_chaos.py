"""Concurrent transfers between two banks while the coordinator and the banks are
SIGKILLed at random and restarted: money is conserved, every transfer is applied at
both banks or at neither and never twice, and nothing is left prepared."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time

import aiohttp
import pytest

from compose.localcluster import BankCluster
from participant_sdk.client import CoordinatorClient, CoordinatorError
from tests.e2e.conftest import settle
from tests.e2e.test_bank import applied, balances, open_accounts, prepared_in

pytestmark = pytest.mark.slow

ACCOUNTS = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi")
OPENING_BALANCE = 1000
#: Each node is killed this many times, in a random order, with load running in between.
KILLS_PER_NODE = 2
WORKERS = 6


async def test_random_kills_during_transfers_conserve_money_and_apply_each_transfer_once(
    banks: BankCluster,
) -> None:
    seed = int(os.environ.get("TWOPC_CHAOS_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    print(f"chaos seed {seed} (TWOPC_CHAOS_SEED={seed} replays the same choices)")
    banks.start()
    told: dict[str, str] = {}
    kills: dict[str, int] = {name: 0 for name in banks.nodes}
    stop = asyncio.Event()

    async with (
        aiohttp.ClientSession() as http,
        CoordinatorClient(banks.coordinator_url, timeout=10, token=banks.tokens["client"]) as client,
    ):
        await open_accounts(http, banks, {bank: dict.fromkeys(ACCOUNTS, OPENING_BALANCE) for bank in banks.banks})

        async def worker(n: int) -> None:
            local = random.Random(seed * 100 + n)
            while not stop.is_set():
                source, target = local.sample(list(banks.banks), 2)
                amount = local.randint(1, 60)
                participants = [
                    {"name": source, "payload": {"account": local.choice(ACCOUNTS), "delta": -amount}},
                    {"name": target, "payload": {"account": local.choice(ACCOUNTS), "delta": amount}},
                ]
                try:
                    gtid = (await client.begin(participants=participants, timeout_ms=5000))["gtid"]
                except (aiohttp.ClientError, CoordinatorError, TimeoutError):
                    await asyncio.sleep(0.05)  # the coordinator is down: a pause before trying again
                    continue
                try:
                    told[gtid] = (await client.commit(gtid))["outcome"] or "unknown"
                except (aiohttp.ClientError, CoordinatorError, TimeoutError):
                    told[gtid] = "unknown"

        async def nemesis() -> None:
            victims = list(banks.nodes) * KILLS_PER_NODE
            rng.shuffle(victims)
            for victim in victims:
                await asyncio.sleep(rng.uniform(0.5, 1.5))  # load runs between kills
                banks.nodes[victim].kill(signal.SIGKILL)
                kills[victim] += 1
                await asyncio.to_thread(banks.restart, victim)
            stop.set()

        await asyncio.gather(nemesis(), *(worker(n) for n in range(WORKERS)))
        await settle(http, banks, client)

        at = {bank: await applied(http, banks, bank) for bank in banks.banks}
        money = {bank: await balances(http, banks, bank) for bank in banks.banks}

    committed = {g for g, outcome in told.items() if outcome == "committed"}
    aborted = {g for g, outcome in told.items() if outcome == "aborted"}
    print(f"transfers: {len(committed)} committed, {len(aborted)} aborted, {len(told)} begun; kills: {kills}")
    assert len(committed) >= 20  # the load made progress between the kills
    for bank in banks.banks:
        assert len(at[bank]) == len(set(at[bank]))  # no transfer applied twice
        assert all(balance >= 0 for balance in money[bank].values())
    assert set(at["bank-a"]) == set(at["bank-b"])  # atomic: at both banks or at neither
    assert committed <= set(at["bank-a"])  # durable: what a client was told committed is applied
    assert not aborted & set(at["bank-a"])
    total = sum(sum(accounts.values()) for accounts in money.values())
    assert total == OPENING_BALANCE * len(ACCOUNTS) * len(banks.banks)  # conserved
    for dsn in banks.banks.values():
        assert prepared_in(dsn) == []
