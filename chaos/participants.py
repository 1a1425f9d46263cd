"""Participant kinds a chaos topology can hold: how to provision and start one, what a
transaction asks of it, and how to read back what it did.

Each kind reports effects as a count per key: how many times each transaction's work is
visible there, keyed by gtid where the participant records it (queue items, bank
transfers) or by the workload's tag where it cannot (Kafka messages carry the tag).
Exactly once means every count is 1; atomicity means a transaction is visible at every
participant or at none. A kind that records both may also say which transactions each
tag's work came from (:meth:`ParticipantKind.gtids_by_tag`): one Idempotency-Key, one
transaction.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import secrets
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import aiohttp

from compose.localcluster import Service

__all__ = ["KINDS", "BankKind", "EventsKind", "MockQueueKind", "ParticipantKind"]


@dataclass
class ParticipantKind:
    """One participant of a topology; subclasses know its service."""

    name: str
    port: int
    data_dir: Path
    #: Where it reaches the coordinator: every replica, the next one when one does not answer.
    coordinator_urls: list[str]
    secret: str
    inquiry_interval: float = 0.5
    #: How much later it answers each prepare and commit (a mock queue's fault).
    delay_ms: int = 0

    kind: ClassVar[str]
    #: What :meth:`effects` counts by: "gtid" or "tag".
    effects_key: ClassVar[str] = "gtid"

    async def provision(self) -> None:
        """Make what the service needs before it starts (a database, a topic)."""

    async def populate(self, http: aiohttp.ClientSession) -> None:
        """Set the service up once it answers (accounts)."""

    async def release(self) -> None:
        """Remove what :meth:`provision` made."""

    def argv(self) -> list[str]:
        service = Service(self.name, self.kind, tuple(self.extra_args()))
        return service.argv(self.port, self.data_dir, self.coordinator_urls, self.secret, self.inquiry_interval)

    def extra_args(self) -> list[str]:
        return []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ready_url(self) -> str:
        return f"{self.url}/healthz"

    def payload(self, tag: str, rng: random.Random) -> Any:
        raise NotImplementedError

    async def effects(self, http: aiohttp.ClientSession) -> Counter[str]:
        raise NotImplementedError

    async def gtids_by_tag(self, http: aiohttp.ClientSession) -> dict[str, set[str]] | None:
        """The transactions whose work carries each workload tag; None where the kind
        does not record both."""
        return None

    async def in_doubt(self, http: aiohttp.ClientSession) -> int | None:
        """Branches in doubt here; None while the service cannot say (it is unhealthy)."""
        async with http.get(self.ready_url) as response:
            if response.status != 200:
                return None
            return int((await response.json())["in_doubt"])

    async def violations(self, http: aiohttp.ClientSession) -> list[tuple[str, str]]:
        """The kind's own checks, as (invariant, message) pairs."""
        return []


class MockQueueKind(ParticipantKind):
    kind = "mockqueue"

    async def populate(self, http: aiohttp.ClientSession) -> None:
        if self.delay_ms:
            async with http.post(f"{self.url}/queue/faults", json={"delay_ms": self.delay_ms}) as response:
                if response.status != 200:
                    raise RuntimeError(f"{self.name}: setting its delay failed: {await response.text()}")

    def payload(self, tag: str, rng: random.Random) -> Any:
        return {"items": [tag]}

    async def effects(self, http: aiohttp.ClientSession) -> Counter[str]:
        return Counter(item["gtid"] for item in await self._items(http))

    async def gtids_by_tag(self, http: aiohttp.ClientSession) -> dict[str, set[str]] | None:
        found: dict[str, set[str]] = {}
        for item in await self._items(http):
            found.setdefault(str(item["value"]), set()).add(item["gtid"])
        return found

    async def _items(self, http: aiohttp.ClientSession) -> list[dict[str, Any]]:
        async with http.get(f"{self.url}/queue/items") as response:
            items: list[dict[str, Any]] = (await response.json())["items"]
        return items


class BankKind(ParticipantKind):
    """A bank on a database of its own; two banks make each transaction a transfer."""

    kind = "bank"
    ACCOUNTS = 100
    OPENING_BALANCE = 1_000
    #: Which side of a transfer this bank is (0 or 1), set by the topology.
    role: int = 0
    dsn: str = ""
    _database: str = ""
    _server_dsn: str = ""

    async def provision(self) -> None:
        from adapters.postgres.testing import database_dsn, server_dsn

        self._server_dsn = await asyncio.to_thread(server_dsn)
        self._database = f"twopc_chaos_{self.name.replace('-', '_')}_{secrets.token_hex(3)}"
        await self._admin(f'CREATE DATABASE "{self._database}"')
        self.dsn = database_dsn(self._server_dsn, self._database)

    async def release(self) -> None:
        if not self._database:
            return
        from adapters.postgres.testing import drop_database

        await drop_database(self._server_dsn, self._database)

    async def _admin(self, statement: str) -> None:
        import psycopg

        async with await psycopg.AsyncConnection.connect(self._server_dsn, autocommit=True) as admin:
            await admin.execute(statement)

    async def populate(self, http: aiohttp.ClientSession) -> None:
        for n in range(self.ACCOUNTS):
            body = {"id": f"acct-{n}", "balance": self.OPENING_BALANCE}
            async with http.post(f"{self.url}/accounts", json=body) as response:
                if response.status not in (201, 409):
                    raise RuntimeError(f"{self.name}: opening an account failed: {await response.text()}")

    def extra_args(self) -> list[str]:
        return ["--dsn", self.dsn, "--sweep-interval", "2"]

    def payload(self, tag: str, rng: random.Random) -> Any:
        # Both banks derive the transfer from the tag alone, so their entries cancel out.
        digest = int.from_bytes(hashlib.sha256(tag.encode()).digest()[:8], "big")
        amount = 1 + digest % 50
        debit = digest >> 8 & 1
        account = f"acct-{rng.randrange(self.ACCOUNTS)}"
        return {"account": account, "delta": -amount if self.role == debit else amount}

    async def effects(self, http: aiohttp.ClientSession) -> Counter[str]:
        async with http.get(f"{self.url}/transfers") as response:
            transfers = (await response.json())["transfers"]
        return Counter(t["gtid"] for t in transfers)

    async def total(self, http: aiohttp.ClientSession) -> int:
        async with http.get(f"{self.url}/accounts") as response:
            return int((await response.json())["total"])

    async def violations(self, http: aiohttp.ClientSession) -> list[tuple[str, str]]:
        async with http.get(self.ready_url) as response:
            prepared = (await response.json())["prepared"]
        if prepared.get("count"):
            return [("no_prepared_left", f"{self.name} still holds {prepared['count']} prepared transactions")]
        return []


class EventsKind(ParticipantKind):
    """Kafka messages: each transaction publishes one event carrying its tag."""

    kind = "events"
    effects_key = "tag"
    bootstrap: str = ""
    topic: str = ""

    async def provision(self) -> None:
        from adapters.kafka.testing import bootstrap_servers
        from adapters.kafka.topics import create_topic

        self.bootstrap = await asyncio.to_thread(bootstrap_servers)
        self.topic = await create_topic(self.bootstrap, f"chaos-{self.name}-{secrets.token_hex(3)}", partitions=3)

    def extra_args(self) -> list[str]:
        return ["--bootstrap", self.bootstrap, "--stage-topic", f"_twopc_stage.chaos.{self.topic}"]

    def payload(self, tag: str, rng: random.Random) -> Any:
        return {"messages": [{"topic": self.topic, "key": tag, "value": {"tag": tag}}]}

    async def effects(self, http: aiohttp.ClientSession) -> Counter[str]:
        from adapters.kafka.topics import read_committed

        messages = await read_committed(self.bootstrap, [self.topic], settled=True)
        return Counter(m.key.decode() for m in messages if m.key is not None)

    async def violations(self, http: aiohttp.ClientSession) -> list[tuple[str, str]]:
        async with http.get(self.ready_url) as response:
            branches = (await response.json())["branches"]
        if branches.get("prepared"):
            return [("no_prepared_left", f"{self.name} still holds {branches['prepared']} staged branches undecided")]
        return []


KINDS: dict[str, type[ParticipantKind]] = {k.kind: k for k in (MockQueueKind, BankKind, EventsKind)}
