"""The pipeline example as real processes: a coordinator, the bank (its ledger in
PostgreSQL), the events service (Kafka) and one or more ``twopc pipeline serve``
instances of one consumer group, with a producer of order events.

Tests and the pipeline chaos scenarios start it; each run has its own topics, its own
consumer group and its own database, so runs on one broker and one server never meet.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from adapters.kafka.topics import create_topic, publish
from compose.localcluster import LocalCluster, Service
from compose.supervisor import Node, free_port, twopc_command

__all__ = ["BANK", "EVENTS", "PipelineStack", "order_event"]

BANK = "bank"
EVENTS = "events"

# Short timeouts and retries so that recovery happens within a test's patience.
_FAST = """
[transactions]
prepare_timeout_ms = 3000
phase_two_timeout_ms = 1000
commit_wait_ms = 2000
retry_base_ms = 20
retry_cap_ms = 300
"""


def order_event(number: int, run: str) -> tuple[bytes, bytes]:
    """The ``(key, value)`` of order ``number``: an id unique to the run, an amount."""
    event_id = f"{run}-o{number}"
    return event_id.encode(), orjson.dumps({"id": event_id, "amount": number % 97 + 1})


@dataclass
class PipelineStack:
    directory: Path
    bootstrap: str
    #: The bank's database (its ledger); the caller's, dropped by the caller.
    bank_dsn: str
    instances: int = 1
    partitions: int = 3
    max_batch: int = 20
    transaction_timeout_ms: int = 5000
    #: The least the broker allows by default: a crashed pipeline's partitions move on soon.
    session_timeout_ms: int = 6000
    #: Run the pipelines as the build broken on purpose (see KafkaSource).
    unsafe_offsets_after_commit: bool = False
    run: str = field(default_factory=lambda: secrets.token_hex(3))
    cluster: LocalCluster = field(init=False)
    pipelines: dict[str, Node] = field(default_factory=dict, init=False)
    produced: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.directory = self.directory.resolve()
        self.input_topic = f"orders-{self.run}"
        self.output_topic = f"order-accepted-{self.run}"
        self.group = f"pipeline-{self.run}"
        self.events = f"{EVENTS}-{self.run}"  # its stage topic and transactional ids are the run's own
        services = [
            Service(
                self.events, "events", ("--bootstrap", self.bootstrap, "--shards", "2", "--offset-group", self.group)
            ),
            Service(BANK, "bank", ("--dsn", self.bank_dsn)),
        ]
        self.cluster = LocalCluster(
            self.directory, queues=(), services=services, coordinator_toml=_FAST, inquiry_interval=0.3
        )
        for number in range(1, self.instances + 1):
            self.add_pipeline(f"pipeline-{number}")

    def add_pipeline(self, name: str) -> Node:
        port = free_port()
        argv = twopc_command(
            "pipeline", "serve", "--port", str(port), "--bootstrap", self.bootstrap,
            "--coordinator", self.cluster.coordinator_url, "--bank", self.cluster.url(BANK),
            "--events", self.events, "--group", self.group, "--input", self.input_topic,
            "--output", self.output_topic, "--max-batch", str(self.max_batch),
            "--transaction-timeout-ms", str(self.transaction_timeout_ms),
            "--session-timeout-ms", str(self.session_timeout_ms),
        )  # fmt: skip
        if self.unsafe_offsets_after_commit:
            argv.append("--unsafe-offsets-after-commit")
        # The token goes in the environment: a command line is anybody's to read (ps).
        node = Node(
            name,
            argv,
            f"http://127.0.0.1:{port}/healthz",
            self.directory / f"{name}.log",
            env={"TWOPC_TOKEN": self.cluster.tokens["client"]},
        )
        self.pipelines[name] = node
        return node

    @property
    def nodes(self) -> dict[str, Node]:
        """Every process: the coordinator, the bank, the events service, the pipelines."""
        return {**self.cluster.nodes, **self.pipelines}

    async def create_topics(self) -> None:
        await create_topic(self.bootstrap, self.input_topic, self.partitions)
        await create_topic(self.bootstrap, self.output_topic, self.partitions)

    async def start(self, pipelines: Sequence[str] | None = None, timeout: float = 60.0) -> None:
        """Topics, then the cluster, then the pipelines named (default: all)."""
        await self.create_topics()
        await asyncio.to_thread(self.cluster.start, timeout)
        for name in self.pipelines if pipelines is None else pipelines:
            await self.start_node(name, timeout=timeout)

    async def start_node(self, name: str, env: dict[str, str] | None = None, timeout: float = 60.0) -> None:
        node = self.nodes[name]
        node.start(env)
        await asyncio.to_thread(node.wait_ready, timeout)

    async def produce(self, count: int) -> None:
        """The next ``count`` order events, spread over the input's partitions by key."""
        first = self.produced
        self.produced += count
        await publish(self.bootstrap, self.input_topic, [order_event(n, self.run) for n in range(first, first + count)])

    def stop(self) -> None:
        for node in reversed(list(self.nodes.values())):
            node.kill(signal.SIGCONT)  # a paused node cannot hear SIGTERM
            node.stop()
