"""A branch's consumer offsets: the reads a global transaction consumed, committed to
their consumer group in the same Kafka transaction as the branch's messages.

In the payload: ``"offsets": {"group": "G", "partitions": [{"topic": "orders",
"partition": 0, "offset": 42, "metadata": "..."}]}``, where ``offset`` is the next
offset the group is to read (the last one consumed plus one, as Kafka counts) and
``metadata`` (optional, a string) is stored with it. A partition appears once.

:func:`parse_offsets` checks the shape; :func:`check_offsets` holds the offsets against
the broker's topics and the partitions' ends, so that a commit never fails on them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeGuard

if TYPE_CHECKING:  # limits reads messages, which reads this module
    from adapters.kafka.limits import TopicInfo

__all__ = [
    "MAX_METADATA",
    "MAX_PARTITIONS",
    "GroupOffsets",
    "PartitionOffset",
    "check_offsets",
    "decode_offsets",
    "encode_offsets",
    "parse_offsets",
]

#: Partitions one branch may commit offsets for.
MAX_PARTITIONS = 10_000
#: Characters of metadata per partition (the broker's default limit, offset.metadata.max.bytes).
MAX_METADATA = 4096
#: A consumer group id: printable, no control characters, within what the broker takes.
_GROUP_ID = re.compile(r"^[\x21-\x7e]{1,255}$")
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_FIELDS = frozenset({"group", "partitions"})
_PARTITION_FIELDS = frozenset({"topic", "partition", "offset", "metadata"})
#: Kafka offsets are signed 64-bit numbers.
_MAX_OFFSET = 2**63 - 1


@dataclass(frozen=True, slots=True)
class PartitionOffset:
    topic: str
    partition: int
    #: The next offset the group reads.
    offset: int
    metadata: str = ""


@dataclass(frozen=True, slots=True)
class GroupOffsets:
    group: str
    partitions: tuple[PartitionOffset, ...]


def parse_offsets(raw: Any, where: str = "offsets") -> GroupOffsets:
    """The offsets of a payload's ``"offsets"``; ValueError saying what is wrong."""
    if not isinstance(raw, dict):
        raise ValueError(f'{where} must be an object {{"group": ..., "partitions": [...]}}, not {_kind(raw)}')
    unexpected = sorted(set(raw) - _FIELDS)
    if unexpected:
        raise ValueError(f"{where} has unexpected fields {unexpected}; allowed: {sorted(_FIELDS)}")
    group = raw.get("group")
    if not isinstance(group, str) or not _GROUP_ID.match(group):
        raise ValueError(f"{where}.group must be a consumer group id (1 to 255 printable characters), not {group!r}")
    items = raw.get("partitions")
    if not isinstance(items, list) or not items:
        raise ValueError(f"{where}.partitions must be a non-empty list")
    if len(items) > MAX_PARTITIONS:
        raise ValueError(f"{where}.partitions may hold at most {MAX_PARTITIONS} partitions, not {len(items)}")
    partitions = [_parse_partition(item, f"{where}.partitions[{index}]") for index, item in enumerate(items)]
    seen: set[tuple[str, int]] = set()
    for index, p in enumerate(partitions):
        if (p.topic, p.partition) in seen:
            raise ValueError(f"{where}.partitions[{index}]: partition {p.partition} of {p.topic!r} appears twice")
        seen.add((p.topic, p.partition))
    return GroupOffsets(group, tuple(partitions))


def _parse_partition(item: Any, where: str) -> PartitionOffset:
    if not isinstance(item, dict):
        raise ValueError(f"{where} must be an object, not {_kind(item)}")
    unexpected = sorted(set(item) - _PARTITION_FIELDS)
    if unexpected:
        raise ValueError(f"{where} has unexpected fields {unexpected}; allowed: {sorted(_PARTITION_FIELDS)}")
    topic = item.get("topic")
    if not isinstance(topic, str) or not _TOPIC_NAME.match(topic) or topic in (".", ".."):
        raise ValueError(f"{where}.topic must be a Kafka topic name, not {topic!r}")
    partition, offset = item.get("partition"), item.get("offset")
    if not _whole(partition) or not 0 <= partition < 2**31:
        raise ValueError(f"{where}.partition must be a non-negative integer, not {partition!r}")
    if not _whole(offset) or not 0 <= offset <= _MAX_OFFSET:
        raise ValueError(f"{where}.offset must be a non-negative integer, not {offset!r}")
    metadata = item.get("metadata", "")
    if not isinstance(metadata, str) or len(metadata) > MAX_METADATA:
        raise ValueError(f"{where}.metadata must be a string of at most {MAX_METADATA} characters")
    return PartitionOffset(topic, partition, offset, metadata)


def check_offsets(
    offsets: GroupOffsets, topics: Mapping[str, TopicInfo | None], ends: Mapping[tuple[str, int], int]
) -> str | None:
    """Why committing ``offsets`` would be wrong (an unknown topic or partition, an offset
    past the partition's end), or None. ``ends``: each partition's end offset."""
    for index, p in enumerate(offsets.partitions):
        where = f"offsets.partitions[{index}]"
        if p.topic.startswith("__"):
            return f"{where}.topic: {p.topic!r} is internal to Kafka"
        info = topics.get(p.topic)
        if info is None:
            return f"{where}.topic: topic {p.topic!r} does not exist"
        if p.partition >= info.partitions:
            return f"{where}.partition: topic {p.topic!r} has partitions 0..{info.partitions - 1}, not {p.partition}"
        end = ends.get((p.topic, p.partition))
        if end is None:
            return f"{where}: the end of partition {p.partition} of {p.topic!r} is not known"
        if p.offset > end:
            return f"{where}.offset: {p.offset} is past the end of partition {p.partition} of {p.topic!r} ({end})"
    return None


def encode_offsets(offsets: GroupOffsets) -> dict[str, Any]:
    """The staged form: compact, and equal offsets give equal bytes."""
    return {"g": offsets.group, "p": [[p.topic, p.partition, p.offset, p.metadata] for p in offsets.partitions]}


def decode_offsets(raw: Any) -> GroupOffsets:
    """The offsets :func:`encode_offsets` encoded; ValueError if ``raw`` is not that."""
    try:
        partitions = tuple(
            PartitionOffset(str(topic), int(partition), int(offset), str(metadata))
            for topic, partition, offset, metadata in raw["p"]
        )
        return GroupOffsets(str(raw["g"]), partitions)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"staged offsets are not readable: {exc!r}") from None


def _whole(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__
