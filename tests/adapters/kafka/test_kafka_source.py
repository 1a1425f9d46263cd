"""The source's pure parts: the intent an offset commit carries, and the batch's
identity (its Idempotency-Key) and offsets, derived from the batch alone; and how one
step of its loop ends."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from adapters.kafka.source import KafkaSource, SourceBatch, intent_metadata, parse_intent
from participant_sdk.client import CoordinatorClient


def batch(**fields: object) -> SourceBatch:
    values: dict[str, object] = {
        "group": "g",
        "topic": "orders",
        "partition": 2,
        "first": 10,
        "last": 19,
        "attempt": 1,
        "records": [],
    }
    values.update(fields)
    return SourceBatch(**values)  # type: ignore[arg-type]


def test_an_intent_reads_back_as_its_last_offset_and_attempt() -> None:
    assert parse_intent(intent_metadata(19, 3)) == (19, 3)


def test_other_metadata_is_no_intent() -> None:
    for metadata in (None, "", "hello", "twopc-source/1 last=x attempt=1", "twopc-source/2 last=1 attempt=1"):
        assert parse_intent(metadata) is None


def test_the_same_batch_has_the_same_key_in_any_process() -> None:
    assert batch().idempotency_key == batch(records=["whatever was read"]).idempotency_key
    assert batch().idempotency_key == "kafka-source:g:orders:2:10-19:1"


def test_another_attempt_or_cut_has_another_key() -> None:
    keys = {batch().idempotency_key, batch(attempt=2).idempotency_key, batch(last=18).idempotency_key}
    assert len(keys) == 3


def test_a_key_too_long_for_the_header_is_hashed_and_still_derived() -> None:
    long_group = "g" * 250
    key = batch(group=long_group).idempotency_key
    assert len(key) <= 255 and key.startswith("kafka-source:")
    assert key == batch(group=long_group).idempotency_key


def test_the_batch_commits_the_offset_after_its_last_record() -> None:
    assert batch().offsets() == {"group": "g", "partitions": [{"topic": "orders", "partition": 2, "offset": 20}]}


class _FetchingConsumer:
    """Enough of a consumer for one step: two partitions, a record each."""

    def __init__(self, tps: list[TopicPartition]) -> None:
        self.tps = tps

    def assignment(self) -> set[TopicPartition]:
        return set(self.tps)

    async def getmany(self, *tps: TopicPartition, timeout_ms: int = 0, max_records: int = 0) -> dict[Any, Any]:
        return {tp: [object()] for tp in tps}


async def test_a_failing_partition_lets_the_others_batches_end_before_the_step_does() -> None:
    tps = [TopicPartition("orders", 0), TopicPartition("orders", 1)]
    source = KafkaSource("b", "g", ["orders"], CoordinatorClient("http://127.0.0.1:1"), "events")
    source._consumer = _FetchingConsumer(tps)
    source._positions = dict.fromkeys(tps, 0)
    ended: list[int] = []

    async def run_partition(tp: TopicPartition, records: list[Any], handler: Any) -> None:
        if tp.partition == 0:
            raise KafkaError("the broker went away")
        await asyncio.sleep(0.05)
        ended.append(tp.partition)

    source._run_partition = run_partition  # type: ignore[method-assign]
    with pytest.raises(KafkaError):
        await source._step(lambda batch: asyncio.sleep(0))
    assert ended == [1]  # not still running behind the next fetch
