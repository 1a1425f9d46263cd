"""The chaos workload: clients running global transactions over every participant,
recording what they were told and when."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

import aiohttp

from chaos.topology import Topology
from participant_sdk.client import CoordinatorClient, CoordinatorError

__all__ = ["Txn", "Workload"]


@dataclass
class Txn:
    tag: str
    gtid: str | None
    #: What the client was told: committed, aborted, or unknown (no answer).
    outcome: str
    started: float
    ended: float


class Workload:
    def __init__(self, topology: Topology, clients: int, seed: int, request_timeout: float, t0: float) -> None:
        self.topology = topology
        self.clients = clients
        self.seed = seed
        self.request_timeout = request_timeout
        self.t0 = t0
        self.history: list[Txn] = []

    def counts(self) -> dict[str, int]:
        counts = {"committed": 0, "aborted": 0, "unknown": 0}
        for txn in self.history:
            counts[txn.outcome] += 1
        return counts

    async def run(self, stop: asyncio.Event) -> None:
        async with CoordinatorClient(self.topology.coordinator_url, timeout=self.request_timeout) as client:
            await asyncio.gather(*(self._client(n, client, stop) for n in range(self.clients)))

    async def _client(self, n: int, client: CoordinatorClient, stop: asyncio.Event) -> None:
        rng = random.Random(f"{self.seed}-{n}")
        loop = asyncio.get_running_loop()
        seq = 0
        while not stop.is_set():
            seq += 1
            tag = f"c{n}-{seq}"
            participants = [
                {"name": name, "payload": kind.payload(tag, rng)} for name, kind in self.topology.participants.items()
            ]
            started = loop.time() - self.t0
            gtid = None
            try:
                gtid = (await client.begin(participants=participants, metadata={"tag": tag}))["gtid"]
                outcome = (await client.commit(gtid))["outcome"] or "unknown"
            except (aiohttp.ClientError, CoordinatorError, TimeoutError):
                outcome = "unknown"
            self.history.append(Txn(tag, gtid, outcome, started, loop.time() - self.t0))
            if outcome == "unknown":
                # The coordinator is down or cut off: do not spin while it recovers.
                await asyncio.sleep(rng.uniform(0.05, 0.2))
