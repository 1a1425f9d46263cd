"""Kafka as a 2PC participant: prepared messages survive a crash of the adapter, COMMIT
publishes them exactly once to ``read_committed`` consumers, ABORT leaves nothing visible.

Prepare stages a branch's messages in a compacted stage topic (one Kafka transaction);
commit sends them to their topics together with the branch's COMMITTED marker in one
Kafka transaction; one transactional producer per shard, with a fixed transactional id,
fences the zombies of a crashed run. See :mod:`adapters.kafka.resource`.
"""

from adapters.kafka.limits import TopicCatalog, TopicInfo, check_messages
from adapters.kafka.messages import OutgoingMessage, PayloadError, parse_payload
from adapters.kafka.resource import KafkaResource, MessageBatch
from adapters.kafka.settings import KafkaSettings
from adapters.kafka.shard import KafkaUnavailableError
from adapters.kafka.stage import BranchEntry, StageEntryState

__all__ = [
    "BranchEntry",
    "KafkaResource",
    "KafkaSettings",
    "KafkaUnavailableError",
    "MessageBatch",
    "OutgoingMessage",
    "PayloadError",
    "StageEntryState",
    "TopicCatalog",
    "TopicInfo",
    "check_messages",
    "parse_payload",
]
