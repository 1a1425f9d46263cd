"""The kafka workload: each transaction publishes one message through the events service
(Kafka) and puts one item on a mock queue.

The queue is there because a transaction with a single branch commits in one phase,
which would measure something else; a mock queue costs next to nothing, so the figures
are Kafka's two-phase path.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AsyncExitStack
from pathlib import Path

from compose.localcluster import Service
from tools.bench._cluster import Branch, ClusterWorkload
from tools.bench._coordinators import Coordinators
from tools.bench._resources import kafka_bootstrap, run_topics
from tools.bench._workload import Progress

__all__ = ["EventsStream", "KafkaWorkload"]

#: Partitions of the topic the messages go to.
_PARTITIONS = 3


class EventsStream:
    """An events participant of one run, publishing to a topic made for that run."""

    def __init__(self, bootstrap: str | None, run_id: str) -> None:
        self._bootstrap = bootstrap
        # Kafka transactional ids ({participant}-{shard}) are broker-wide: a fixed name
        # would fence the producers of another run, or of a chaos run, on the same broker.
        self.name = f"events-{run_id}"
        self.topic = f"twopc-bench-{run_id}"
        self.stage_topic = f"_twopc_stage.{self.name}"

    async def provision(self, cleanup: AsyncExitStack, progress: Progress) -> Service:
        bootstrap = kafka_bootstrap(self._bootstrap)
        progress(f"creating the topic {self.topic} on the Kafka broker {bootstrap} ...")
        await cleanup.enter_async_context(
            run_topics(bootstrap, self.topic, _PARTITIONS, also_delete=(self.stage_topic,))
        )
        return Service(self.name, "events", ("--bootstrap", bootstrap, "--stage-topic", self.stage_topic))

    def branch(self, key: str) -> Branch:
        return self.name, {"messages": [{"topic": self.topic, "key": key, "value": {"key": key}}]}


class KafkaWorkload(ClusterWorkload):
    name = "kafka"
    queue = "queue-a"

    def __init__(
        self,
        directory: Path,
        coordinator_toml: str = "",
        bootstrap: str | None = None,
        coordinators: Coordinators | None = None,
    ) -> None:
        super().__init__(directory, coordinator_toml, coordinators)
        self.events = EventsStream(bootstrap, self.run_id)

    async def provision(self, cleanup: AsyncExitStack, progress: Progress) -> tuple[Sequence[str], Sequence[Service]]:
        return [self.queue], [await self.events.provision(cleanup, progress)]

    def branches(self, worker: int, seq: int) -> list[Branch]:
        key = f"{self.run_id}-{worker}-{seq}"
        return [self.events.branch(key), (self.queue, {"items": [key]})]
