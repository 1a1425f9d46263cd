"""The Kafka participant's settings."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["KafkaSettings"]

_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


@dataclass(frozen=True)
class KafkaSettings:
    """How the adapter reaches Kafka and keeps its stage.

    ``participant`` names the transactional ids (``{participant}-{shard}``): two live
    adapters with one name fence each other, which is the point (a restarted adapter
    fences its zombie), so give every participant its own name.
    """

    bootstrap_servers: str
    participant: str
    #: The compacted topic that holds prepared branches and their markers; one per
    #: participant (its partitions are the shards, written by this participant only).
    stage_topic: str | None = None
    #: Partitions of the stage topic when the adapter creates it; an existing topic's
    #: partition count wins. Each shard commits its Kafka transactions one at a time.
    shards: int = 4
    #: For the stage topic when the adapter creates it (production: 3 and 2).
    replication_factor: int = 1
    min_insync_replicas: int = 1
    #: Staged messages are cut into stage records of at most this many bytes.
    chunk_bytes: int = 512 * 1024
    #: A branch whose staged messages exceed this votes no.
    max_branch_bytes: int = 64 * 1024 * 1024
    #: The producer's request limit; a message over it (or over the topic's
    #: ``max.message.bytes``) votes no.
    max_request_size: int = 1024 * 1024
    #: How long a COMMITTED or ABORTED marker is kept before it is forgotten. It must
    #: outlast the time a coordinator may still resend a decision (its outages included).
    marker_retention: float = 7 * 24 * 3600.0
    #: Deadline of one Kafka call or transaction, after which its outcome counts as unknown.
    request_timeout: float = 30.0
    #: How long topic facts (partitions, limits) are trusted before asking again.
    metadata_ttl: float = 30.0
    #: Branches whose records may share one Kafka transaction.
    max_group: int = 256
    #: The consumer groups a branch may commit offsets for: names, or prefixes ending in
    #: ``*``; None lets any group's offsets through. Whoever may enlist this participant
    #: could otherwise move any group's offsets, and so make its consumers skip events.
    offset_groups: tuple[str, ...] | None = None
    #: Extra options for every aiokafka client (security_protocol, sasl_*, ssl_context, ...).
    client_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.bootstrap_servers:
            raise ValueError("bootstrap_servers is required")
        if not self.participant:
            raise ValueError("participant is required")
        if not _TOPIC_NAME.match(self.topic):
            raise ValueError(f"stage topic {self.topic!r} is not a valid Kafka topic name")
        for name in ("shards", "replication_factor", "min_insync_replicas", "chunk_bytes", "max_group"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("max_branch_bytes", "max_request_size", "marker_retention", "request_timeout", "metadata_ttl"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")

    def allows_group(self, group: str) -> bool:
        """Whether a branch may commit offsets for ``group`` (see ``offset_groups``)."""
        if self.offset_groups is None:
            return True
        return any(group.startswith(g[:-1]) if g.endswith("*") else group == g for g in self.offset_groups)

    @property
    def topic(self) -> str:
        return self.stage_topic or f"_twopc_stage.{self.participant}"

    def transactional_id(self, shard: int) -> str:
        return f"{self.participant}-{shard}"
