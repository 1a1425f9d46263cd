"""A branch's consumer offsets: what parses, what is refused and why, and the staged form."""

from __future__ import annotations

import pytest

from adapters.kafka.limits import TopicInfo
from adapters.kafka.messages import (
    BranchPayload,
    OutgoingMessage,
    PayloadError,
    decode_branch,
    encode_branch,
    encode_messages,
    parse_branch,
)
from adapters.kafka.offsets import GroupOffsets, PartitionOffset, check_offsets, parse_offsets
from adapters.kafka.settings import KafkaSettings

TOPICS = {"orders": TopicInfo("orders", 3, 1048588, False)}


def offsets(*partitions: dict[str, object], group: str = "g") -> dict[str, object]:
    return {"group": group, "partitions": list(partitions)}


def test_offsets_parse_with_optional_metadata() -> None:
    parsed = parse_offsets(
        offsets(
            {"topic": "orders", "partition": 0, "offset": 5},
            {"topic": "orders", "partition": 2, "offset": 0, "metadata": "m"},
        )
    )
    assert parsed == GroupOffsets("g", (PartitionOffset("orders", 0, 5), PartitionOffset("orders", 2, 0, "m")))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([], "must be an object"),
        ({"group": "g"}, "partitions must be a non-empty list"),
        ({"group": "g", "partitions": []}, "partitions must be a non-empty list"),
        ({"group": "", "partitions": [{"topic": "t", "partition": 0, "offset": 1}]}, "consumer group id"),
        ({"group": "a b", "partitions": [{"topic": "t", "partition": 0, "offset": 1}]}, "consumer group id"),
        ({"group": "g", "partitions": [{"topic": "t", "partition": 0, "offset": 1}], "x": 1}, "unexpected fields"),
        (offsets({"topic": "t", "partition": -1, "offset": 1}), "partition must be a non-negative integer"),
        (offsets({"topic": "t", "partition": True, "offset": 1}), "partition must be a non-negative integer"),
        (offsets({"topic": "t", "partition": 0, "offset": "5"}), "offset must be a non-negative integer"),
        (offsets({"topic": "t", "partition": 0, "offset": 2**63}), "offset must be a non-negative integer"),
        (offsets({"topic": "t/x", "partition": 0, "offset": 1}), "topic must be a Kafka topic name"),
        (offsets({"topic": "t", "partition": 0, "offset": 1, "metadata": 7}), "metadata must be a string"),
        (offsets({"topic": "t", "partition": 0, "offset": 1, "group": "g"}), "unexpected fields"),
        (
            offsets({"topic": "t", "partition": 0, "offset": 1}, {"topic": "t", "partition": 0, "offset": 2}),
            "appears twice",
        ),
    ],
)
def test_malformed_offsets_are_refused_saying_what_is_wrong(raw: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_offsets(raw)


def test_a_payload_with_malformed_offsets_is_a_payload_error() -> None:
    with pytest.raises(PayloadError, match=r"offsets\.partitions\[0\]\.offset"):
        parse_branch({"messages": [], "offsets": offsets({"topic": "t", "partition": 0, "offset": -3})})


def test_a_payload_of_offsets_alone_is_not_empty() -> None:
    branch = parse_branch({"messages": [], "offsets": offsets({"topic": "orders", "partition": 1, "offset": 3})})
    assert not branch.empty
    assert parse_branch({"messages": []}).empty


@pytest.mark.parametrize(
    ("partition", "reason"),
    [
        ({"topic": "missing", "partition": 0, "offset": 1}, "topic 'missing' does not exist"),
        ({"topic": "orders", "partition": 3, "offset": 1}, "has partitions 0..2, not 3"),
        ({"topic": "orders", "partition": 0, "offset": 11}, "11 is past the end of partition 0 of 'orders' (10)"),
        ({"topic": "__consumer_offsets", "partition": 0, "offset": 0}, "internal to Kafka"),
    ],
)
def test_offsets_the_broker_cannot_hold_are_named(partition: dict[str, object], reason: str) -> None:
    topics = {**TOPICS, "missing": None, "__consumer_offsets": TopicInfo("__consumer_offsets", 50, 1, True)}
    found = check_offsets(parse_offsets(offsets(partition)), topics, {("orders", 0): 10})
    assert found is not None and reason in found


def test_an_offset_at_the_partitions_end_is_taken() -> None:
    assert (
        check_offsets(
            parse_offsets(offsets({"topic": "orders", "partition": 0, "offset": 10})), TOPICS, {("orders", 0): 10}
        )
        is None
    )


def test_a_branch_with_offsets_is_staged_and_read_back_whole() -> None:
    branch = BranchPayload(
        [OutgoingMessage("out", b"v", b"k")],
        GroupOffsets("g", (PartitionOffset("orders", 0, 5, "meta"), PartitionOffset("orders", 1, 9))),
    )
    assert decode_branch(encode_branch(branch)) == branch


def test_a_branch_without_offsets_is_staged_as_its_messages_alone() -> None:
    messages = [OutgoingMessage("out", b"v", b"k")]
    blob = encode_branch(BranchPayload(messages))
    assert blob == encode_messages(messages)  # what a participant staged before offsets existed
    assert decode_branch(blob) == BranchPayload(messages)


def test_staged_offsets_that_do_not_read_are_an_error() -> None:
    with pytest.raises(ValueError, match="not readable"):
        decode_branch(b'{"m": [], "o": {"g": "g", "p": [["t", 0]]}}')


def test_offset_groups_allow_names_and_prefixes_or_anything_when_unset() -> None:
    settings = KafkaSettings(bootstrap_servers="b", participant="p", offset_groups=("pipeline", "jobs-*"))
    assert [settings.allows_group(g) for g in ("pipeline", "pipeline-2", "jobs-", "jobs-7", "job")] == [
        True,
        False,
        True,
        True,
        False,
    ]
    assert KafkaSettings(bootstrap_servers="b", participant="p").allows_group("anything")
