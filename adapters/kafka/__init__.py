"""Kafka as a 2PC participant: prepared messages survive a crash of the adapter, COMMIT
publishes them exactly once to ``read_committed`` consumers, ABORT leaves nothing visible.

Prepare stages a branch's messages in a compacted stage topic (one Kafka transaction);
commit sends them to their topics together with the branch's COMMITTED marker in one
Kafka transaction; one transactional producer per shard, with a fixed transactional id,
fences the zombies of a crashed run. See :mod:`adapters.kafka.resource`.

A branch may also carry consumer offsets (:mod:`adapters.kafka.offsets`), committed to
their group in the same Kafka transaction; :class:`KafkaSource` uses that to make a
consumer's reads part of each batch's global transaction (:mod:`adapters.kafka.source`).
"""

from adapters.kafka.limits import TopicCatalog, TopicInfo, check_messages
from adapters.kafka.messages import BranchPayload, OutgoingMessage, PayloadError, parse_branch, parse_payload
from adapters.kafka.offsets import GroupOffsets, PartitionOffset
from adapters.kafka.resource import KafkaResource, MessageBatch
from adapters.kafka.settings import KafkaSettings
from adapters.kafka.shard import KafkaUnavailableError
from adapters.kafka.source import BatchOutcome, KafkaSource, SourceBatch, SourceRecord
from adapters.kafka.stage import BranchEntry, StageEntryState

__all__ = [
    "BatchOutcome",
    "BranchEntry",
    "BranchPayload",
    "GroupOffsets",
    "KafkaResource",
    "KafkaSettings",
    "KafkaSource",
    "KafkaUnavailableError",
    "MessageBatch",
    "OutgoingMessage",
    "PartitionOffset",
    "PayloadError",
    "SourceBatch",
    "SourceRecord",
    "StageEntryState",
    "TopicCatalog",
    "TopicInfo",
    "check_messages",
    "parse_branch",
    "parse_payload",
]
