"""What the broker would refuse, found at prepare so that a commit never is refused.

:class:`TopicCatalog` asks the broker about topics (partitions, ``max.message.bytes``,
``cleanup.policy``) and keeps what it learnt for a short while; :func:`check_messages`
holds a branch's messages against it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from adapters.kafka.messages import OutgoingMessage

__all__ = ["TopicCatalog", "TopicInfo", "check_messages", "record_size"]

_UNKNOWN_TOPIC = 3
#: Topics the broker keeps for itself: never a target.
_INTERNAL_PREFIX = "__"


@dataclass(frozen=True, slots=True)
class TopicInfo:
    name: str
    partitions: int
    max_message_bytes: int
    compacted: bool


class TopicCatalog:
    """Topic facts from the broker. Known topics are kept ``ttl`` seconds; an unknown
    topic is asked about every time, so one created a moment ago is found at once."""

    def __init__(self, admin: AIOKafkaAdminClient, ttl: float = 30.0, clock: Callable[[], float] = time.monotonic):
        self._admin = admin
        self._ttl = ttl
        self._clock = clock
        self._known: dict[str, tuple[float, TopicInfo]] = {}

    async def describe(self, names: Iterable[str]) -> dict[str, TopicInfo | None]:
        """``name → TopicInfo``, or None for a topic the broker does not have."""
        now = self._clock()
        result: dict[str, TopicInfo | None] = {}
        ask: list[str] = []
        for name in dict.fromkeys(names):
            cached = self._known.get(name)
            if cached is not None and now - cached[0] < self._ttl:
                result[name] = cached[1]
            else:
                ask.append(name)
        if ask:
            for name, info in (await self._ask(ask)).items():
                result[name] = info
                if info is not None:
                    self._known[name] = (now, info)
                else:
                    self._known.pop(name, None)
        return result

    def forget(self, name: str) -> None:
        self._known.pop(name, None)

    async def _ask(self, names: Sequence[str]) -> dict[str, TopicInfo | None]:
        described = await self._admin.describe_topics(list(names))
        partitions: dict[str, int] = {}
        for topic in described:
            if topic["error_code"] == 0:
                partitions[topic["topic"]] = len(topic["partitions"])
            elif topic["error_code"] != _UNKNOWN_TOPIC:
                raise RuntimeError(
                    f"the broker could not describe topic {topic['topic']!r}: error {topic['error_code']}"
                )
        configs = await self._configs(list(partitions)) if partitions else {}
        infos: dict[str, TopicInfo | None] = dict.fromkeys(names)
        for name, count in partitions.items():
            config = configs.get(name, {})
            infos[name] = TopicInfo(
                name=name,
                partitions=count,
                max_message_bytes=int(config.get("max.message.bytes", 1048588)),
                compacted="compact" in config.get("cleanup.policy", "delete"),
            )
        return infos

    async def _configs(self, names: list[str]) -> dict[str, dict[str, str]]:
        resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
        responses = await self._admin.describe_configs(resources)
        configs: dict[str, dict[str, str]] = {}
        for response in responses:
            for resource in response.resources:
                error_code, _message, _type, name, entries = resource[:5]
                if error_code == 0:
                    configs[name] = {entry[0]: entry[1] for entry in entries}
        return configs


def record_size(message: OutgoingMessage) -> int:
    """An upper bound of the size of the record batch that carries ``message`` alone."""
    headers: list[Any] = list(message.headers)
    size: int = DefaultRecordBatchBuilder.estimate_size_in_bytes(message.key, message.value, headers)
    return size


def check_messages(
    messages: Sequence[OutgoingMessage], topics: dict[str, TopicInfo | None], max_request_size: int, stage_topic: str
) -> str | None:
    """Why the broker (or the producer) would refuse one of ``messages``, or None."""
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if message.topic == stage_topic or message.topic.startswith(_INTERNAL_PREFIX):
            return f"{where}.topic: {message.topic!r} is internal to Kafka or to this participant"
        info = topics.get(message.topic)
        if info is None:
            return f"{where}.topic: topic {message.topic!r} does not exist"
        if message.partition is not None and message.partition >= info.partitions:
            return (
                f"{where}.partition: topic {message.topic!r} has partitions 0..{info.partitions - 1}, "
                f"not {message.partition}"
            )
        if info.compacted and message.key is None:
            return f"{where}: topic {message.topic!r} is compacted, so every message needs a key"
        size = record_size(message)
        limit = min(max_request_size, info.max_message_bytes)
        if size > limit:
            which = (
                "the producer's max_request_size"
                if max_request_size <= info.max_message_bytes
                else (f"max.message.bytes of {message.topic!r}")
            )
            return f"{where} is too large: {size} bytes with its record overhead, over {limit} ({which})"
    return None
