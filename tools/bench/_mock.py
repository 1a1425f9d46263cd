"""The mock workload: the coordinator with N mock queues; each transaction puts one item
on every queue."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AsyncExitStack
from pathlib import Path

from compose.localcluster import Service
from tools.bench._cluster import Branch, ClusterWorkload
from tools.bench._coordinators import Coordinators
from tools.bench._workload import Progress

__all__ = ["MockWorkload", "queue_names"]


def queue_names(count: int) -> list[str]:
    return [f"queue-{chr(ord('a') + i)}" for i in range(count)]


class MockWorkload(ClusterWorkload):
    name = "mock"

    def __init__(
        self,
        directory: Path,
        participants: int,
        coordinator_toml: str = "",
        coordinators: Coordinators | None = None,
    ) -> None:
        super().__init__(directory, coordinator_toml, coordinators)
        self.queues = queue_names(participants)

    async def provision(self, cleanup: AsyncExitStack, progress: Progress) -> tuple[Sequence[str], Sequence[Service]]:
        return self.queues, ()

    def branches(self, worker: int, seq: int) -> list[Branch]:
        item = f"{self.run_id}-{worker}-{seq}"
        return [(queue, {"items": [item]}) for queue in self.queues]
