"""The adapter's aiokafka clients: the shard producers, the stage reader, the stage topic."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from adapters.kafka.settings import KafkaSettings
from adapters.kafka.stage import StageFold

__all__ = ["ensure_stage_topic", "fenced_producer", "make_admin", "make_offset_reader", "read_stage", "stop_quietly"]

logger = structlog.get_logger("adapters.kafka")

_TOPIC_ALREADY_EXISTS = 36


def _common(settings: KafkaSettings) -> dict[str, Any]:
    return {
        "bootstrap_servers": settings.bootstrap_servers,
        "request_timeout_ms": int(settings.request_timeout * 1000),
        **settings.client_options,
    }


def make_admin(settings: KafkaSettings) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**_common(settings))


def make_offset_reader(settings: KafkaSettings) -> AIOKafkaConsumer:
    """A consumer of no group, to ask partitions for their end offsets (the high watermark)."""
    return AIOKafkaConsumer(group_id=None, enable_auto_commit=False, **_common(settings))


async def stop_quietly(client: Any, timeout: float) -> None:
    """Stop a producer, consumer or admin client within ``timeout``, whatever state it is in."""
    try:
        await asyncio.wait_for(client.stop() if hasattr(client, "stop") else client.close(), timeout)
    except Exception as exc:
        logger.warning("kafka client did not stop cleanly", error=repr(exc))
        # A producer whose broker is gone keeps retrying in its sender task, which a
        # cancelled stop() leaves running: end it (aiokafka has no public way).
        sender = getattr(getattr(client, "_sender", None), "sender_task", None)
        if sender is not None and not sender.done():
            sender.cancel()
        inner = getattr(client, "client", None)
        if inner is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(inner.close(), 1.0)


async def fenced_producer(settings: KafkaSettings, shard: int) -> AIOKafkaProducer:
    """A started transactional producer for ``shard``, with every older producer of the
    same transactional id fenced off and its open transaction finished.

    aiokafka's ``start()`` already waits for InitProducerId, which the broker answers
    only once the previous epoch's open transaction is completed (aborted, or committed
    if its commit had begun); the empty transaction afterwards is a cheap check that the
    producer can run transactions at all.
    """
    producer = AIOKafkaProducer(
        transactional_id=settings.transactional_id(shard),
        max_request_size=settings.max_request_size,
        linger_ms=0,
        **_common(settings),
    )
    try:
        async with asyncio.timeout(settings.request_timeout):
            await producer.start()
            await producer.begin_transaction()
            await producer.abort_transaction()
    except BaseException:
        await stop_quietly(producer, settings.request_timeout)
        raise
    return producer


async def read_stage(settings: KafkaSettings, partitions: Iterable[int]) -> dict[int, StageFold]:
    """Read the stage partitions ``read_committed`` from their start to their end.

    Call it after fencing: with no open transaction of ours, the end (the last stable
    offset) is the high watermark, so everything we ever committed is read.
    """
    folds = {p: StageFold(settings.participant) for p in partitions}
    consumer = AIOKafkaConsumer(
        isolation_level="read_committed",
        enable_auto_commit=False,
        group_id=None,
        max_partition_fetch_bytes=max(1024 * 1024, 2 * settings.chunk_bytes),
        **_common(settings),
    )
    try:
        async with asyncio.timeout(settings.request_timeout):
            await consumer.start()
            tps = [TopicPartition(settings.topic, p) for p in folds]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
        remaining = [tp for tp in tps if ends[tp] > 0]
        last_progress = time.monotonic()
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=500)
            for tp, records in batch.items():
                fold = folds[tp.partition]
                for record in records:
                    fold.add(record.key, record.value, record.headers, record.timestamp / 1000)
                last_progress = time.monotonic()
            still = []
            for tp in remaining:
                if await consumer.position(tp) < ends[tp]:
                    still.append(tp)
            remaining = still
            if remaining and time.monotonic() - last_progress > settings.request_timeout:
                raise TimeoutError(f"reading the stage topic {settings.topic!r} made no progress")
    finally:
        await stop_quietly(consumer, settings.request_timeout)
    return folds


async def ensure_stage_topic(admin: AIOKafkaAdminClient, settings: KafkaSettings) -> int:
    """Create the stage topic unless it exists; return its partition count (the shards)."""
    topic = settings.topic
    described = await admin.describe_topics([topic])
    if not described or described[0]["error_code"] != 0:
        response = await admin.create_topics(
            [
                NewTopic(
                    topic,
                    settings.shards,
                    settings.replication_factor,
                    topic_configs={
                        "cleanup.policy": "compact",
                        "min.insync.replicas": str(settings.min_insync_replicas),
                    },
                )
            ]
        )
        for error in response.topic_errors:
            code = error[1]
            if code not in (0, _TOPIC_ALREADY_EXISTS):
                message = error[2] if len(error) > 2 else ""
                raise RuntimeError(f"could not create the stage topic {topic!r}: error {code} {message}")
        logger.info("stage topic created", topic=topic, partitions=settings.shards)
    deadline = time.monotonic() + settings.request_timeout
    while True:  # a new topic's partitions need a leader before they take writes
        described = await admin.describe_topics([topic])
        if described and described[0]["error_code"] == 0:
            partitions = described[0]["partitions"]
            if partitions and all(p["leader"] >= 0 for p in partitions):
                break
        if time.monotonic() >= deadline:
            raise RuntimeError(f"the stage topic {topic!r} has no leader for every partition yet")
        await asyncio.sleep(0.1)
    count = len(partitions)
    if count != settings.shards:
        logger.info(
            "stage topic has its own partition count", topic=topic, partitions=count, configured=settings.shards
        )
    return count
