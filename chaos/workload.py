"""The chaos workload: clients running global transactions over every participant,
recording what they were told and when.

Client ``n`` sends to replica ``n mod N`` first. Every transaction carries an
Idempotency-Key; a client that hears no answer (the replica died, stalled, or is not
ready) asks again with the same key at the next replica, for as long as the scenario's
``retry_for_s``, and records every gtid it was given for that key.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from chaos.topology import Topology
from participant_sdk.client import CoordinatorClient, CoordinatorError

__all__ = ["Txn", "Workload"]

_NO_ANSWER = (aiohttp.ClientError, CoordinatorError, TimeoutError)


@dataclass
class Txn:
    tag: str
    gtid: str | None
    #: What the client was told: committed, aborted, or unknown (no answer).
    outcome: str
    started: float
    ended: float
    #: The Idempotency-Key it was begun with.
    key: str = ""
    #: Every gtid a begin with that key answered (one, unless a key began two).
    gtids: set[str] = field(default_factory=set)
    #: Attempts after the first, each at the next replica.
    retries: int = 0


class Workload:
    def __init__(
        self, topology: Topology, clients: int, seed: int, request_timeout: float, t0: float, retry_for: float = 0.0
    ) -> None:
        self.topology = topology
        self.clients = clients
        self.seed = seed
        self.request_timeout = request_timeout
        self.retry_for = retry_for
        self.t0 = t0
        self.history: list[Txn] = []

    def counts(self) -> dict[str, int]:
        counts = {"committed": 0, "aborted": 0, "unknown": 0}
        for txn in self.history:
            counts[txn.outcome] += 1
        return counts

    @property
    def retries(self) -> int:
        return sum(txn.retries for txn in self.history)

    async def run(self, stop: asyncio.Event) -> None:
        async with aiohttp.ClientSession() as session:
            replicas = [
                CoordinatorClient(url, session, timeout=self.request_timeout, token=self.topology.tokens["client"])
                for url in self.topology.coordinator_urls
            ]
            await asyncio.gather(*(self._client(n, replicas, stop) for n in range(self.clients)))

    async def _client(self, n: int, replicas: list[CoordinatorClient], stop: asyncio.Event) -> None:
        rng = random.Random(f"{self.seed}-{n}")
        loop = asyncio.get_running_loop()
        seq = 0
        while not stop.is_set():
            seq += 1
            tag = f"c{n}-{seq}"
            participants = [
                {"name": name, "payload": kind.payload(tag, rng)} for name, kind in self.topology.participants.items()
            ]
            txn = Txn(tag, None, "unknown", loop.time() - self.t0, 0.0, key=f"chaos-{self.seed}-{tag}")
            give_up_at = loop.time() + self.retry_for
            while True:
                client = replicas[(n + txn.retries) % len(replicas)]
                outcome = await self._attempt(client, txn, participants)
                if outcome != "unknown" or loop.time() >= give_up_at or stop.is_set():
                    break
                txn.retries += 1
                await asyncio.sleep(rng.uniform(0.05, 0.2))
            txn.outcome, txn.ended = outcome, loop.time() - self.t0
            self.history.append(txn)
            if outcome == "unknown":
                # The coordinators are down or cut off: do not spin while they recover.
                await asyncio.sleep(rng.uniform(0.05, 0.2))

    async def _attempt(self, client: CoordinatorClient, txn: Txn, participants: list[dict[str, Any]]) -> str:
        """Begin (or find again, by its key) and commit; what the client was told."""
        try:
            begun = await client.begin(participants=participants, metadata={"tag": txn.tag}, idempotency_key=txn.key)
            gtid = begun.gtid
            txn.gtids.add(gtid)
            txn.gtid = txn.gtid or gtid
            try:
                view = await client.commit(gtid)
            except CoordinatorError as exc:
                if exc.code != "wrong_state":
                    raise
                view = await client.get(gtid)  # decided meanwhile (aborted by a takeover, say)
            return str(view.outcome or "unknown")
        except _NO_ANSWER:
            return "unknown"
