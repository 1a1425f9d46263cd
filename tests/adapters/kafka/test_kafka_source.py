"""The source's pure parts: the intent an offset commit carries, and the batch's
identity (its Idempotency-Key) and offsets, derived from the batch alone."""

from __future__ import annotations

from adapters.kafka.source import SourceBatch, intent_metadata, parse_intent


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
