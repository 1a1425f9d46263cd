"""Kafka as a 2PC resource: stage at prepare, publish atomically at commit.

- start: make sure the stage topic exists; per shard, start the producer with the fixed
  transactional id ``{participant}-{shard}`` (fencing any zombie of a previous run);
  then read every stage partition ``read_committed`` to its end to learn each branch's
  state. Only then does the participant take calls.
- prepare: check the messages' shape, then ask the broker whether it would take them
  (topic exists, partition in range, size under the limits, key present for compacted
  topics); stage them in one short Kafka transaction; vote yes once it is committed.
- commit: one Kafka transaction sends the staged messages to their topics and the
  branch's COMMITTED marker to the stage: ``read_committed`` consumers see both or
  neither, so a crash leaves either nothing published (commit again) or all of it
  with the marker (nothing to do).
- offsets: a branch may carry consumer offsets (:mod:`adapters.kafka.offsets`); checked at
  prepare (topic, partition, not past the partition's end), staged with the messages,
  committed to their group in the commit's Kafka transaction, dropped by an abort.
- abort: an ABORTED marker; nothing ever reached the target topics.
- markers older than the retention are tombstoned (forgotten) in the background.

The stage holds each branch's state (prepared, then its marker), staged in the same
Kafka transaction as its work: a vote costs one durable write, and the participant
log only caches it (``holds_branch_state``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from opentelemetry import trace
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from adapters.kafka.clients import ensure_stage_topic, make_admin, make_offset_reader, read_stage, stop_quietly
from adapters.kafka.limits import TopicCatalog, check_messages
from adapters.kafka.messages import BranchPayload, PayloadError, encode_branch, parse_branch
from adapters.kafka.offsets import GroupOffsets, PartitionOffset, check_offsets
from adapters.kafka.settings import KafkaSettings
from adapters.kafka.shard import Shard
from adapters.kafka.stage import BranchEntry, StageEntryState, chunk_records, digest_of
from participant_sdk import BranchStatus, PrepareResult, Resource, Vote

__all__ = ["KafkaResource", "MessageBatch"]

logger = structlog.get_logger("adapters.kafka")
tracer = trace.get_tracer("adapters.kafka")

#: Room a stage record needs beyond its chunk: key, headers, batch overhead.
_RECORD_OVERHEAD = 1024
#: Markers forgotten per Kafka transaction.
_FORGET_BATCH = 1000

_STATUS_OF_ENTRY = {
    StageEntryState.PREPARED: BranchStatus.PREPARED,
    StageEntryState.COMMITTED: BranchStatus.COMMITTED,
    StageEntryState.ABORTED: BranchStatus.ABORTED,
}


class MessageBatch:
    """The messages of an early-prepared branch, in the payload's form (see
    :mod:`adapters.kafka.messages`): ``batch.add({"topic": "orders", "value": {...}})``,
    and the consumer offsets it commits: ``batch.commit_offsets("group", [...])``."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.offsets: dict[str, Any] | None = None

    def commit_offsets(self, group: str, partitions: Iterable[PartitionOffset]) -> None:
        """Commit these offsets (each the next offset to read) to ``group`` with the messages."""
        self.offsets = {
            "group": group,
            "partitions": [
                {"topic": p.topic, "partition": p.partition, "offset": p.offset, "metadata": p.metadata}
                for p in partitions
            ],
        }

    def payload(self) -> dict[str, Any]:
        if self.offsets is None:
            return {"messages": self.messages}
        return {"messages": self.messages, "offsets": self.offsets}

    def add(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    def extend(self, messages: Iterable[dict[str, Any]]) -> None:
        self.messages.extend(messages)


class KafkaResource(Resource):
    holds_branch_state = True

    def __init__(self, settings: KafkaSettings, *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.shards: list[Shard] = []
        self._clock = clock
        self._admin: Any = None
        self._catalog: TopicCatalog | None = None
        # Asks partitions for their end offsets; started the first time offsets are checked.
        self._offset_reader: AIOKafkaConsumer | None = None
        self._offset_reader_lock = asyncio.Lock()
        self._housekeeper: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        settings = self.settings
        admin = make_admin(settings)
        try:
            try:
                async with asyncio.timeout(settings.request_timeout):
                    await admin.start()
            except Exception as exc:
                raise RuntimeError(f"cannot reach Kafka at {settings.bootstrap_servers}: {exc!r}") from exc
            count = await ensure_stage_topic(admin, settings)
            self._admin, self._catalog = admin, TopicCatalog(admin, settings.metadata_ttl)
            await self._check_stage_limits()
            shards = [Shard(index, settings, self._clock) for index in range(count)]
            self.shards = shards
            # Fence first, read after: once every zombie is fenced, nothing can be added
            # to a partition behind our backs while we read it.
            await asyncio.gather(*(shard.fence() for shard in shards))
            folds = await read_stage(settings, range(count))
        except BaseException:
            await self.close()
            raise
        for shard in shards:
            fold = folds[shard.index]
            entries = fold.finish()
            for problem in fold.problems:
                logger.error("stage record not understood", shard=shard.index, problem=problem)
            shard.start(entries)
        self._housekeeper = asyncio.create_task(self._housekeeping(), name="kafka-housekeeping")
        logger.info(
            "kafka participant ready",
            participant=settings.participant,
            stage_topic=settings.topic,
            shards=count,
            prepared=len(self._prepared()),
        )

    async def close(self) -> None:
        if self._housekeeper is not None:
            self._housekeeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeper
            self._housekeeper = None
        await asyncio.gather(*(shard.close() for shard in self.shards))
        self.shards = []
        if self._offset_reader is not None:
            await stop_quietly(self._offset_reader, self.settings.request_timeout)
            self._offset_reader = None
        if self._admin is not None:
            await stop_quietly(self._admin, self.settings.request_timeout)
            self._admin = None

    async def _check_stage_limits(self) -> None:
        assert self._catalog is not None
        info = (await self._catalog.describe([self.settings.topic]))[self.settings.topic]
        if info is None:
            raise RuntimeError(f"the stage topic {self.settings.topic!r} vanished")
        if not info.compacted:
            logger.warning("the stage topic is not compacted: it will grow without bound", topic=info.name)
        limit = min(self.settings.max_request_size, info.max_message_bytes)
        if self.settings.chunk_bytes + _RECORD_OVERHEAD > limit:
            raise ValueError(
                f"chunk_bytes {self.settings.chunk_bytes} does not fit a stage record: "
                f"keep it under {limit - _RECORD_OVERHEAD} (max_request_size and the topic's max.message.bytes)"
            )

    # -- validation ------------------------------------------------------------------

    async def validate(self, payload: Any) -> BranchPayload:
        """The payload's messages and offsets if Kafka would take them all; :class:`PayloadError`
        saying why not."""
        branch = parse_branch(payload)
        if self._catalog is None:
            raise RuntimeError("the Kafka participant is not started")
        offsets = branch.offsets
        named = [m.topic for m in branch.messages]
        if offsets is not None:
            named += [p.topic for p in offsets.partitions]
        topics = await self._catalog.describe(named)
        reason = check_messages(branch.messages, topics, self.settings.max_request_size, self.settings.topic)
        if reason is None and offsets is not None:
            if not self.settings.allows_group(offsets.group):
                reason = f"offsets.group: this participant does not commit offsets for group {offsets.group!r}"
            else:
                reason = check_offsets(offsets, topics, await self._ends(offsets, topics))
        if reason is not None:
            raise PayloadError(reason)
        return branch

    async def _ends(self, offsets: GroupOffsets, topics: dict[str, Any]) -> dict[tuple[str, int], int]:
        """The end offsets of the partitions ``offsets`` names that exist."""
        wanted = [
            TopicPartition(p.topic, p.partition)
            for p in offsets.partitions
            if (info := topics.get(p.topic)) is not None and p.partition < info.partitions
        ]
        if not wanted:
            return {}
        async with self._offset_reader_lock:
            if self._offset_reader is None:
                reader = make_offset_reader(self.settings)
                async with asyncio.timeout(self.settings.request_timeout):
                    await reader.start()
                self._offset_reader = reader
        async with asyncio.timeout(self.settings.request_timeout):
            ends = await self._offset_reader.end_offsets(wanted)
        return {(tp.topic, tp.partition): end for tp, end in ends.items()}

    # -- the resource ----------------------------------------------------------------

    async def prepare(self, gtid: str, branch: str, payload: Any) -> PrepareResult:
        try:
            staged = await self.validate(payload)
        except PayloadError as exc:
            return PrepareResult.no(str(exc))
        if staged.empty:
            return PrepareResult.read_only()
        blob = encode_branch(staged)
        if len(blob) > self.settings.max_branch_bytes:
            return PrepareResult.no(
                f"the branch's messages take {len(blob)} bytes staged, over max_branch_bytes "
                f"{self.settings.max_branch_bytes}"
            )
        digest = digest_of(blob)
        shard, entry = self._find(gtid, branch)
        if entry is not None:
            return self._repeat_prepare(entry, digest)
        records = chunk_records(branch, gtid, blob, self.settings.chunk_bytes)
        entry = BranchEntry(
            gtid,
            branch,
            StageEntryState.PREPARED,
            digest,
            len(records),
            self._clock(),
            staged.messages,
            staged.offsets,
        )
        with self._span("stage", gtid, branch, shard, [self.settings.topic], len(records)):
            await shard.stage(entry, records, len(blob))
        return PrepareResult.yes()

    @staticmethod
    def _repeat_prepare(entry: BranchEntry, digest: str) -> PrepareResult:
        if entry.state is StageEntryState.ABORTED:
            return PrepareResult.no("this branch was already aborted")
        if entry.digest and entry.digest != digest:
            return PrepareResult.no("this branch was already prepared with other messages")
        return PrepareResult.yes()

    @contextlib.asynccontextmanager
    async def branch(self, gtid: str, branch: str) -> AsyncIterator[MessageBatch]:
        """Early prepare: the application adds messages (and offsets) to the batch; a clean
        exit stages them (as a YES vote would), an invalid one raises :class:`PayloadError`."""
        batch = MessageBatch()
        yield batch
        if not batch.messages and batch.offsets is None:
            # A YES with nothing staged would leave the commit nothing to do.
            raise PayloadError("an early-prepared Kafka branch needs at least one message or offsets")
        result = await self.prepare(gtid, branch, batch.payload())
        if result.vote is Vote.NO:
            raise PayloadError(result.reason or "Kafka would not take these messages")

    async def commit(self, gtid: str, branch: str) -> None:
        shard, entry = self._find(gtid, branch)
        if entry is None:
            raise RuntimeError(
                f"nothing is staged for branch {branch} of {gtid}, and no marker says it was committed "
                f"(markers are forgotten after {self.settings.marker_retention:.0f}s)"
            )
        if entry.state is StageEntryState.COMMITTED:
            return
        messages = entry.messages or []
        topics = sorted({m.topic for m in messages} | {self.settings.topic})  # the marker goes to the stage
        with self._span("publish", gtid, branch, shard, topics, len(messages)):
            await shard.commit((gtid, branch))

    async def abort(self, gtid: str, branch: str) -> None:
        shard, entry = self._find(gtid, branch)
        if entry is None or entry.state is StageEntryState.ABORTED:
            return  # nothing staged: nothing to drop, and nothing to remember
        with self._span("abort", gtid, branch, shard, [self.settings.topic], 0):
            await shard.abort((gtid, branch))

    async def recover(self) -> list[tuple[str, str]]:
        return self._prepared()

    async def branch_status(self, gtid: str, branch: str) -> BranchStatus:
        _, entry = self._find(gtid, branch)
        if entry is None:
            return BranchStatus.UNKNOWN
        return _STATUS_OF_ENTRY[entry.state]

    @contextlib.contextmanager
    def _span(
        self, operation: str, gtid: str, branch: str, shard: Shard, topics: list[str], messages: int
    ) -> Iterator[None]:
        """A PRODUCER span for the branch's part of a Kafka transaction (which a shard may
        share with other branches), under the participant's span; none outside a trace."""
        if not trace.get_current_span().is_recording():
            yield
            return
        attributes: dict[str, Any] = {
            "messaging.system": "kafka",
            "messaging.operation.name": operation,
            "messaging.operation.type": "send",
            "messaging.kafka.transactional_id": self.settings.transactional_id(shard.index),
            "messaging.batch.message_count": messages,
            "twopc.kafka.topics": topics,
            "twopc.gtid": gtid,
            "twopc.participant": self.settings.participant,
            "twopc.branch": branch,
        }
        if len(topics) == 1:
            attributes["messaging.destination.name"] = topics[0]
        with tracer.start_as_current_span(f"kafka {operation}", kind=trace.SpanKind.PRODUCER, attributes=attributes):
            yield

    # -- what it holds -----------------------------------------------------------------

    def entry(self, gtid: str, branch: str) -> BranchEntry | None:
        return self._find(gtid, branch)[1]

    def counts(self) -> dict[str, int]:
        """Branches per state, over every shard."""
        counts = {state.value: 0 for state in StageEntryState}
        for shard in self.shards:
            for entry in shard.entries.values():
                counts[entry.state.value] += 1
        return counts

    def metric_families(self) -> Iterator[Metric]:
        """The stage's own figures, for the service's ``/metrics``."""
        branches = GaugeMetricFamily(
            "twopc_kafka_stage_branches", "Branches in the stage topic's shards, by state.", labels=["state"]
        )
        for state, count in self.counts().items():
            branches.add_metric([state], count)
        yield branches

    def _prepared(self) -> list[tuple[str, str]]:
        return [
            key
            for shard in self.shards
            for key, entry in shard.entries.items()
            if entry.state is StageEntryState.PREPARED
        ]

    def shard_of(self, gtid: str) -> int:
        """The shard a new branch of ``gtid`` is staged in (stable across processes)."""
        return zlib.crc32(gtid.encode()) % len(self.shards)

    def _find(self, gtid: str, branch: str) -> tuple[Shard, BranchEntry | None]:
        if not self.shards:
            raise RuntimeError("the Kafka participant is not started")
        # A branch stays in the shard it was staged in, even if the partition count grew.
        home = self.shards[self.shard_of(gtid)]
        key = (gtid, branch)
        if key in home.entries:
            return home, home.entries[key]
        for shard in self.shards:
            if key in shard.entries:
                return shard, shard.entries[key]
        return home, None

    # -- forgetting --------------------------------------------------------------------

    async def forget_finished(self, older_than: float) -> int:
        """Tombstone the markers of branches finished before ``older_than`` (unix time)."""
        forgotten = 0
        for shard in self.shards:
            old = [
                key
                for key, entry in shard.entries.items()
                if entry.state is not StageEntryState.PREPARED and entry.at < older_than
            ]
            for start in range(0, len(old), _FORGET_BATCH):
                batch = old[start : start + _FORGET_BATCH]
                await shard.forget(batch)
                forgotten += len(batch)
        return forgotten

    async def _housekeeping(self) -> None:
        interval = min(self.settings.marker_retention / 10, 600.0)
        while True:
            await asyncio.sleep(interval)
            try:
                forgotten = await self.forget_finished(self._clock() - self.settings.marker_retention)
            except Exception as exc:
                logger.warning("forgetting old markers failed", error=repr(exc))
            else:
                if forgotten:
                    logger.info("old markers forgotten", count=forgotten)
