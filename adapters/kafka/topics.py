"""Kafka chores the participant's tools share: make a topic, publish to it, read what a
``read_committed`` consumer sees, read a consumer group's committed offsets."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

__all__ = [
    "CommittedOffset",
    "ReadMessage",
    "committed_offsets",
    "create_topic",
    "delete_topics",
    "publish",
    "read_committed",
]


@dataclass(frozen=True, slots=True)
class ReadMessage:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, slots=True)
class CommittedOffset:
    #: The next offset the group reads.
    offset: int
    metadata: str


async def create_topic(
    bootstrap: str,
    name: str,
    partitions: int = 1,
    configs: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    *,
    replication_factor: int = 1,
    exist_ok: bool = False,
) -> str:
    """Create ``name`` and wait until every partition has a leader; return the name.

    With ``exist_ok`` a topic of that name already there is no error, whatever its
    partitions (a deployment's set-up job runs on every start)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        response = await admin.create_topics(
            [NewTopic(name, partitions, replication_factor, topic_configs=dict(configs or {}))]
        )
        #: The partitions to wait for: those asked for, or, for a topic already there, its own.
        expected: int | None = partitions
        for error in response.topic_errors:
            if error[1] == TopicAlreadyExistsError.errno and exist_ok:
                expected = None
            elif error[1] != 0:
                message = error[2] if len(error) > 2 and error[2] else f"error {error[1]}"
                raise RuntimeError(f"creating topic {name!r} failed: {message}")
        deadline = time.monotonic() + timeout
        while True:
            described = (await admin.describe_topics([name]))[0]
            parts = described["partitions"]
            counted = len(parts) == expected if expected is not None else bool(parts)
            if described["error_code"] == 0 and counted and all(p["leader"] >= 0 for p in parts):
                return name
            if time.monotonic() >= deadline:
                raise TimeoutError(f"topic {name!r} has no leader for every partition after {timeout}s")
            await asyncio.sleep(0.05)
    finally:
        await admin.close()


async def read_committed(
    bootstrap: str, topics: Iterable[str], timeout: float = 30.0, *, settled: bool = False
) -> list[ReadMessage]:
    """Everything a ``read_committed`` consumer sees in ``topics``, from the start to the
    last stable offset, in (topic, partition, offset) order.

    A Kafka transaction's commit returns before its markers are written to every
    partition, so a read right after it may not see it yet. ``settled=True`` first waits
    (up to ``timeout``) until no partition has a transaction in flight (its last stable
    offset is its high watermark): what tests want after a commit.
    """
    tps = [
        TopicPartition(topic, p)
        for topic, count in (await _partitions(bootstrap, topics)).items()
        for p in range(count)
    ]
    if not tps:
        return []
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, isolation_level="read_committed", enable_auto_commit=False, group_id=None
    )
    await consumer.start()
    found: list[ReadMessage] = []
    try:
        async with asyncio.timeout(timeout):
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            if settled:
                ends = await _settle(bootstrap, consumer, tps, ends)
            remaining = [tp for tp in tps if ends[tp] > 0]
            while remaining:
                batch = await consumer.getmany(*remaining, timeout_ms=200)
                for tp, records in batch.items():
                    found.extend(
                        ReadMessage(tp.topic, tp.partition, r.offset, r.key, r.value, tuple(r.headers)) for r in records
                    )
                remaining = [tp for tp in remaining if await consumer.position(tp) < ends[tp]]
    finally:
        await consumer.stop()
    return sorted(found, key=lambda m: (m.topic, m.partition, m.offset))


async def _settle(
    bootstrap: str, consumer: AIOKafkaConsumer, tps: list[TopicPartition], stable: dict[TopicPartition, int]
) -> dict[TopicPartition, int]:
    """Wait until every partition's last stable offset reaches its high watermark."""
    uncommitted = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await uncommitted.start()
    try:
        while True:
            high = await uncommitted.end_offsets(tps)
            if all(stable[tp] >= high[tp] for tp in tps):
                return stable
            await asyncio.sleep(0.02)
            stable = await consumer.end_offsets(tps)
    finally:
        await uncommitted.stop()


async def _partitions(bootstrap: str, topics: Iterable[str]) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(list(topics))
    finally:
        await admin.close()
    missing = [t["topic"] for t in described if t["error_code"] != 0]
    if missing:
        raise RuntimeError(f"no such topics: {missing}")
    return {t["topic"]: len(t["partitions"]) for t in described}


async def delete_topics(bootstrap: str, topics: Iterable[str]) -> None:
    """Delete those of ``topics`` that exist."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        doomed = [t for t in topics if t in existing]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()


async def publish(
    bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes | None]], *, partition: int | None = None
) -> None:
    """Send ``(key, value)`` records to ``topic`` (acknowledged by every in-sync replica);
    RuntimeError at once for a topic the broker does not have."""
    await _partitions(bootstrap, [topic])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        sent = [await producer.send(topic, value, key, partition) for key, value in records]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def committed_offsets(
    bootstrap: str, group: str, partitions: Iterable[tuple[str, int]] | None = None, timeout: float = 30.0
) -> dict[tuple[str, int], CommittedOffset]:
    """The group's committed offsets, per ``(topic, partition)``; those never committed
    are left out. ``partitions``: only these (default: every one the group committed).
    Retriable errors (the group coordinator not there yet) are retried for ``timeout``."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        wanted = None if partitions is None else [TopicPartition(t, p) for t, p in partitions]
        deadline = time.monotonic() + timeout
        while True:
            try:
                found = await admin.list_consumer_group_offsets(group, partitions=wanted)
                break
            except KafkaError as exc:
                # A fresh broker makes its offsets topic at the first group's first call.
                if not exc.retriable or time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(0.1)
    finally:
        await admin.close()
    return {
        (tp.topic, tp.partition): CommittedOffset(meta.offset, meta.metadata or "")
        for tp, meta in found.items()
        if meta.offset >= 0
    }
