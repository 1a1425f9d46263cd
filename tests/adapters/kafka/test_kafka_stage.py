"""The stage records and the state a partition's records add up to."""

from __future__ import annotations

import pytest

from adapters.kafka.messages import OutgoingMessage, encode_messages
from adapters.kafka.stage import (
    StageEntryState,
    StageFold,
    StageRecord,
    chunk_records,
    marker_record,
    parse_key,
    tombstone,
)

MESSAGES = [OutgoingMessage("t", b"x" * 100, b"k%d" % n) for n in range(30)]
BLOB = encode_messages(MESSAGES)


def fold(records: list[StageRecord], name: str = "events") -> StageFold:
    result = StageFold(name)
    for at, record in enumerate(records):
        result.add(record.key, record.value, record.headers, float(at))
    return result


def test_chunks_cut_the_staged_bytes_and_add_up_to_a_prepared_branch() -> None:
    records = chunk_records("events", "g1", BLOB, chunk_bytes=1000)
    assert len(records) == -(-len(BLOB) // 1000)
    assert all(len(r.value or b"") <= 1000 for r in records)
    assert [parse_key(r.key) for r in records[:2]] == [("events", "g1", 0), ("events", "g1", 1)]

    folded = fold(list(reversed(records)))  # order of chunks does not matter
    [entry] = folded.finish().values()
    assert (entry.gtid, entry.branch, entry.state, entry.chunks) == (
        "g1",
        "events",
        StageEntryState.PREPARED,
        len(records),
    )
    assert entry.messages == MESSAGES
    assert folded.problems == []


def test_a_marker_and_the_chunks_tombstones_finish_the_branch() -> None:
    records = chunk_records("events", "g1", BLOB, chunk_bytes=4000)
    ending = [tombstone("events", "g1", i) for i in range(len(records))]
    ending.append(marker_record("events", "g1", StageEntryState.COMMITTED, at=123.0, chunks=len(records)))
    [entry] = fold(records + ending).finish().values()
    assert (entry.state, entry.at, entry.messages) == (StageEntryState.COMMITTED, 123.0, None)

    # After compaction only the marker is left: the same answer.
    [entry] = fold([ending[-1]]).finish().values()
    assert entry.state is StageEntryState.COMMITTED


def test_a_tombstoned_marker_forgets_the_branch() -> None:
    records = [marker_record("events", "g1", StageEntryState.ABORTED, 1.0, 1), tombstone("events", "g1")]
    assert fold(records).finish() == {}


def test_other_participants_records_are_skipped_and_strangers_reported() -> None:
    records = [*chunk_records("other", "g1", BLOB, 10_000), StageRecord(b"no-slashes", b"?")]
    folded = fold(records)
    assert folded.finish() == {}
    assert folded.problems == ["record with a key that is not a stage key: b'no-slashes'"]


@pytest.mark.parametrize("damage", ["missing chunk", "wrong digest", "no headers", "bad marker"])
def test_damaged_stage_records_are_left_out_and_reported(damage: str) -> None:
    records = chunk_records("events", "g1", BLOB, chunk_bytes=1000)
    if damage == "missing chunk":
        del records[1]
    elif damage == "wrong digest":
        records[0] = StageRecord(records[0].key, b"y" * len(records[0].value or b""), records[0].headers)
    elif damage == "no headers":
        records = [StageRecord(r.key, r.value) for r in records]
    else:
        records = [StageRecord(b"events/g1", b"{not json")]
    folded = fold(records)
    assert folded.finish() == {}
    assert len(folded.problems) >= 1 and "g1" in folded.problems[0]


def test_keys_that_are_not_stage_keys_are_not_parsed() -> None:
    assert parse_key(None) is None
    assert parse_key(b"a/b/c") is None
    assert parse_key(b"a/b/c/d") is None
    assert parse_key(b"a/b/7") == ("a", "b", 7)
    with pytest.raises(ValueError, match="chunk_bytes"):
        chunk_records("a", "b", b"x", 0)
