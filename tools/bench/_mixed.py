"""The mixed workload: every transaction is a transfer between two banks (PostgreSQL),
one Kafka message through the events service and one item on a mock queue."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AsyncExitStack
from pathlib import Path

from compose.localcluster import Service
from tools.bench._cluster import Branch, ClusterWorkload
from tools.bench._coordinators import Coordinators
from tools.bench._kafka import EventsStream
from tools.bench._postgres import Banks
from tools.bench._workload import Progress

__all__ = ["MixedWorkload"]


class MixedWorkload(ClusterWorkload):
    name = "mixed"
    queue = "queue-a"

    def __init__(
        self,
        directory: Path,
        coordinator_toml: str = "",
        server_dsn: str | None = None,
        bootstrap: str | None = None,
        coordinators: Coordinators | None = None,
    ) -> None:
        super().__init__(directory, coordinator_toml, coordinators)
        self.banks = Banks(server_dsn, self.run_id)
        self.events = EventsStream(bootstrap, self.run_id)

    async def provision(self, cleanup: AsyncExitStack, progress: Progress) -> tuple[Sequence[str], Sequence[Service]]:
        banks = await self.banks.provision(cleanup, progress)
        events = await self.events.provision(cleanup, progress)
        return [self.queue], [*banks, events]

    async def populate(self, progress: Progress) -> None:
        await self.banks.open_accounts(self._running, progress)

    def branches(self, worker: int, seq: int) -> list[Branch]:
        key = f"{self.run_id}-{worker}-{seq}"
        return [*self.banks.branches(self.banks.transfer()), self.events.branch(key), (self.queue, {"items": [key]})]
