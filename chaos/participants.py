"""Participant kinds a chaos topology can hold: how to start one, what a transaction
asks of it, and how to read back what it did.

Each kind reports effects as ``{gtid: count}``: how many times each transaction's work
is visible there. Exactly-once means every count is 1; atomicity means a gtid is
visible at every participant of its transaction or at none.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import aiohttp

from twopc.supervisor import twopc_command

__all__ = ["KINDS", "MockQueueKind", "ParticipantKind"]


@dataclass
class ParticipantKind:
    """One participant of a topology; subclasses know its service."""

    name: str
    port: int
    data_dir: Path
    coordinator_url: str
    secret: str
    inquiry_interval: float = 0.5

    kind: ClassVar[str]

    def argv(self) -> list[str]:
        raise NotImplementedError

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

    async def in_doubt(self, http: aiohttp.ClientSession) -> int:
        async with http.get(self.ready_url) as response:
            return int((await response.json())["in_doubt"])

    async def extra_violations(self, http: aiohttp.ClientSession) -> list[str]:
        """Checks of the kind's own (leftover prepared work, conservation, ...)."""
        return []


class MockQueueKind(ParticipantKind):
    kind = "mockqueue"

    def argv(self) -> list[str]:
        return twopc_command(
            "mockqueue", "serve", "--name", self.name, "--port", str(self.port), "--data", str(self.data_dir),
            "--coordinator", self.coordinator_url, "--secret", self.secret,
            "--inquiry-interval", str(self.inquiry_interval),
        )  # fmt: skip

    def payload(self, tag: str, rng: random.Random) -> Any:
        return {"items": [tag]}

    async def effects(self, http: aiohttp.ClientSession) -> Counter[str]:
        async with http.get(f"{self.url}/queue/items") as response:
            items = (await response.json())["items"]
        return Counter(item["gtid"] for item in items)


KINDS: dict[str, type[ParticipantKind]] = {"mockqueue": MockQueueKind}
