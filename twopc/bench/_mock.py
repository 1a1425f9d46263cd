"""The mock workload: the coordinator with N mock queues, and the same work without it."""

from __future__ import annotations

import asyncio
import itertools
import secrets
from pathlib import Path

import aiohttp
import orjson

from twopc.localcluster import LocalCluster
from twopc.signing import signed_headers

__all__ = ["MockWorkload"]


class MockWorkload:
    name = "mock"

    def __init__(self, directory: Path, participants: int, coordinator_toml: str = "") -> None:
        self.queues = [f"queue-{chr(ord('a') + i)}" for i in range(participants)]
        self.cluster = LocalCluster(directory, queues=self.queues, coordinator_toml=coordinator_toml)
        self._session: aiohttp.ClientSession | None = None
        self._run = secrets.token_hex(4)
        self._ids = itertools.count()

    def start(self) -> None:
        self.cluster.start(timeout=60)

    def stop(self) -> None:
        self.cluster.stop()

    @property
    def coordinator_pid(self) -> int | None:
        return self.cluster.nodes["coordinator"].pid

    @property
    def participant_pids(self) -> list[int | None]:
        return [self.cluster.nodes[q].pid for q in self.queues]

    async def open(self, concurrency: int) -> None:
        connector = aiohttp.TCPConnector(limit=concurrency * (len(self.queues) + 1), force_close=False)
        self._session = aiohttp.ClientSession(connector=connector)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def metrics(self) -> dict[str, float]:
        async with self.session.get(f"{self.cluster.coordinator_url}/metrics") as response:
            text = await response.text()
        values = {}
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            values[name.removeprefix("twopc_")] = float(value)
        return values

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "open() first"
        return self._session

    def _payload(self, worker: int, seq: int) -> dict[str, object]:
        return {"items": [f"{self._run}-{worker}-{seq}"]}

    async def transaction(self, worker: int, seq: int) -> bool:
        """One global transaction through the coordinator: one item on every queue."""
        body = orjson.dumps({"participants": [{"name": q, "payload": self._payload(worker, seq)} for q in self.queues]})
        async with self.session.post(
            f"{self.cluster.coordinator_url}/v1/transactions:execute",
            data=body,
            headers={"Content-Type": "application/json"},
        ) as response:
            answer = orjson.loads(await response.read())
        if response.status != 200:
            raise RuntimeError(f"coordinator answered {response.status}: {answer}")
        return answer["outcome"] == "committed"

    async def baseline(self, worker: int, seq: int) -> bool:
        """The same participant work without a coordinator: prepare all, then commit all."""
        gtid = f"bench-{self._run}-{next(self._ids)}"
        votes = await asyncio.gather(
            *(
                self._call(
                    q, "prepare", {"gtid": gtid, "branch": q, "payload": self._payload(worker, seq), "deadline": 4e9}
                )
                for q in self.queues
            )
        )
        if any(v.get("vote") != "yes" for v in votes):
            return False
        await asyncio.gather(*(self._call(q, "commit", {"gtid": gtid, "branch": q}) for q in self.queues))
        return True

    async def _call(self, queue: str, operation: str, message: dict[str, object]) -> dict[str, object]:
        body = orjson.dumps(message)
        headers = {"Content-Type": "application/json", **signed_headers(self.cluster.secret, operation, body)}
        async with self.session.post(f"{self.cluster.url(queue)}/twopc/{operation}", data=body, headers=headers) as r:
            answer = orjson.loads(await r.read())
        if r.status != 200:
            raise RuntimeError(f"{queue} answered {r.status} to {operation}: {answer}")
        return answer
