"""Consume → process → produce exactly once: Kafka input read inside global transactions.

:class:`KafkaSource` consumes topics as a member of a consumer group, ``read_committed``,
and hands the application one partition's records at a time (a :class:`SourceBatch`).
The application does the batch's work in the batch's global transaction (early prepare
at its services with ``batch.gtid``, work at prepare with :meth:`SourceBatch.enlist`)
and adds the messages it emits (:meth:`SourceBatch.publish`). The source then enlists
the Kafka participant with those messages *and the batch's consumer offsets*, and
commits: the group's offsets move past the batch in the same Kafka transaction that
publishes its output, and in the same global transaction as the rest of its work.

A batch is known by its *intent*, written before its transaction begins: a plain offset
commit of the batch's start offset whose metadata names the batch's last offset and its
attempt. The transaction's Idempotency-Key is derived from (group, topic, partition,
first and last offset, attempt), so whoever reads the intent finds the transaction:

- after a crash or a rebalance, the partition's new owner reads the committed offset;
  if it carries an intent, the batch it names was in flight. The owner begins the
  same key: a transaction still active is aborted (its owner lost the partition), one
  being decided is waited for; committed, the owner waits until the group's offset
  shows it and reads on; aborted, the batch is read again as the next attempt.
- zombies: aiokafka commits a transaction's offsets with TxnOffsetCommit v0, which
  carries no group generation, so the broker cannot fence a zombie's *transactional*
  commit. The intent write is fenced instead: it is a member's offset commit, refused
  once the group has moved to a new generation. A member that was replaced can
  therefore not start a batch; one whose batch was already running finds it aborted
  by the new owner (or, if it was already being committed, the new owner waits for
  it and reads on after it). See the Kafka adapter's notes in the README.

Batches of one partition are processed one after the other (the next begins once the
group's committed offset shows the previous one); partitions run side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import OffsetAndMetadata

from adapters.kafka.clients import stop_quietly
from participant_sdk.client import CoordinatorClient, CoordinatorError
from participant_sdk.models import Began
from twopc_core import failpoints

__all__ = ["BatchOutcome", "KafkaSource", "SourceBatch", "SourceRecord", "intent_metadata", "parse_intent"]

logger = structlog.get_logger("adapters.kafka.source")

_INTENT = re.compile(r"^twopc-source/1 last=(\d+) attempt=(\d+)$")
_FINAL = ("committed", "aborted")
#: Longest an Idempotency-Key may be; longer derived keys are hashed.
_MAX_KEY = 255


def intent_metadata(last: int, attempt: int) -> str:
    """The offset metadata that says a batch ending at ``last`` is in flight."""
    return f"twopc-source/1 last={last} attempt={attempt}"


def parse_intent(metadata: str | None) -> tuple[int, int] | None:
    """``(last, attempt)`` of an intent's metadata; None for any other metadata."""
    found = _INTENT.match(metadata or "")
    return None if found is None else (int(found[1]), int(found[2]))


@dataclass(frozen=True, slots=True)
class SourceRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    #: Milliseconds since the epoch, as Kafka gives it.
    timestamp: int


@dataclass
class SourceBatch:
    """One partition's records from ``first`` (the offset reading started at) to ``last``
    (the last record's offset), processed in the global transaction ``gtid``."""

    group: str
    topic: str
    partition: int
    first: int
    last: int
    attempt: int
    records: list[SourceRecord]
    gtid: str = ""
    messages: list[dict[str, Any]] = field(default_factory=list)
    enlisted: list[tuple[str, Any]] = field(default_factory=list)
    #: Whether the coordinator said the Kafka participant committed the batch (its offsets with it).
    offsets_committed: bool = False

    @property
    def idempotency_key(self) -> str:
        """Derived from the batch alone: the same batch gives the same key in any process."""
        key = f"kafka-source:{self.group}:{self.topic}:{self.partition}:{self.first}-{self.last}:{self.attempt}"
        if len(key) <= _MAX_KEY:
            return key
        return "kafka-source:" + hashlib.sha256(key.encode()).hexdigest()

    def publish(self, message: dict[str, Any]) -> None:
        """Emit ``message`` (the Kafka participant's message form) if the batch commits."""
        self.messages.append(message)

    def enlist(self, name: str, payload: Any) -> None:
        """Enlist participant ``name`` with ``payload`` (work at prepare)."""
        self.enlisted.append((name, payload))

    def offsets(self) -> dict[str, Any]:
        """The Kafka branch's offsets: the group reads on after the batch."""
        return {
            "group": self.group,
            "partitions": [{"topic": self.topic, "partition": self.partition, "offset": self.last + 1}],
        }

    def metadata(self) -> dict[str, Any]:
        return {
            "kafka_source": {
                "group": self.group,
                "topic": self.topic,
                "partition": self.partition,
                "first": self.first,
                "last": self.last,
                "attempt": self.attempt,
            }
        }


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    batch: SourceBatch
    outcome: str
    #: True when the batch was found in flight (after a crash or a rebalance), not run here.
    resumed: bool = False


Handler = Callable[[SourceBatch], Awaitable[None]]


class KafkaSource:
    """Read ``topics`` as member of ``group`` and run each batch in a global transaction.

    ``kafka_participant``: the name of the Kafka participant the coordinator knows (it
    publishes the batch's messages and commits its offsets). ``max_batch``: records per
    batch at most. ``transaction_timeout_ms``: the coordinator aborts a batch not
    committed by then. ``handoff_wait``: how long a rebalance waits for the batches in
    flight before the partitions are given up. ``session_timeout_ms``: how long the group
    waits for a member that stopped answering (a crashed one) before its partitions go
    to the others (the broker's ``group.min.session.timeout.ms``, 6 s by default, is the
    least it takes). ``client_options``: further aiokafka options (security, ...).
    ``on_outcome`` hears of every batch that ended.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        group: str,
        topics: Sequence[str],
        coordinator: CoordinatorClient,
        kafka_participant: str,
        *,
        max_batch: int = 500,
        transaction_timeout_ms: int = 30_000,
        retry_backoff: float = 0.5,
        handoff_wait: float = 10.0,
        session_timeout_ms: int = 10_000,
        unsafe_offsets_after_commit: bool = False,
        client_options: dict[str, Any] | None = None,
        on_outcome: Callable[[BatchOutcome], None] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.group = group
        self.topics = list(topics)
        self.coordinator = coordinator
        self.kafka_participant = kafka_participant
        self.max_batch = max_batch
        self.transaction_timeout_ms = transaction_timeout_ms
        self.retry_backoff = retry_backoff
        self.handoff_wait = handoff_wait
        self.session_timeout_ms = session_timeout_ms
        #: A build broken on purpose, for chaos runs to catch: the classic at-least-once
        #: consumer, which writes no intent and commits its offsets itself after the
        #: transaction, so a crash in between processes the batch again.
        self.unsafe_offsets_after_commit = unsafe_offsets_after_commit
        self.committed_batches = 0
        self.aborted_batches = 0
        self.resumed_batches = 0
        #: Batches an intent named when a partition was taken over (after a crash or a rebalance).
        self.found_in_flight = 0
        self.records = 0
        self._on_outcome = on_outcome
        self._options = {"bootstrap_servers": bootstrap_servers, **(client_options or {})}
        # Made in start(): aiokafka's clients belong to the running loop.
        self._consumer: AIOKafkaConsumer = None
        self._admin: AIOKafkaAdminClient = None
        # Where each owned partition's next batch starts, once it is resumed.
        self._positions: dict[TopicPartition, int] = {}
        self._attempts: dict[TopicPartition, int] = {}
        self._to_resume: set[TopicPartition] = set()
        # Held while batches run: a rebalance waits for them before giving partitions up.
        self._working = asyncio.Lock()
        self._stopping = asyncio.Event()

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            group_id=self.group,
            isolation_level="read_committed",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=max(100, self.session_timeout_ms // 3),
            **self._options,
        )
        self._admin = AIOKafkaAdminClient(**self._options)
        await self._admin.start()
        await self._consumer.start()
        self._consumer.subscribe(self.topics, listener=_Listener(self))

    async def close(self) -> None:
        self._stopping.set()
        if self._consumer is not None:
            await stop_quietly(self._consumer, 10.0)
        if self._admin is not None:
            await stop_quietly(self._admin, 10.0)

    def stop(self) -> None:
        """Ask :meth:`run` to return after the batches in flight."""
        self._stopping.set()

    @property
    def assignment(self) -> set[TopicPartition]:
        return set(self._consumer.assignment()) if self._consumer is not None else set()

    # -- the loop --------------------------------------------------------------------

    async def run(self, handler: Handler) -> None:
        """Process batches until :meth:`stop`; an error of the handler aborts its batch,
        which is read again (as the next attempt) after ``retry_backoff``."""
        while not self._stopping.is_set():
            try:
                await self._step(handler)
            except (KafkaError, CoordinatorError, OSError, TimeoutError) as exc:
                # A broker or the coordinator away: nothing was decided here; try again.
                logger.warning("the source could not go on; trying again", error=repr(exc))
                await asyncio.sleep(self.retry_backoff)

    async def _step(self, handler: Handler) -> None:
        """One fetch: resume newly assigned partitions, then each partition's records in
        batches, one after the other; partitions side by side."""
        fetched = await self._fetch()
        async with self._working:
            resumed: set[TopicPartition] = set()
            for tp in list(self._to_resume):
                if tp in self._consumer.assignment():
                    await self._resume(tp)
                self._to_resume.discard(tp)  # only once resumed: a failed resume is tried again
                resumed.add(tp)
            work = [
                self._run_partition(tp, records, handler)
                for tp, records in fetched.items()
                # Fetched before a rebalance, or before its resume sought elsewhere: dropped.
                if tp in self._positions and tp not in resumed
            ]
            # Every partition's batches end before the next fetch, even when one fails:
            # a batch still running then would overlap the next one of its partition.
            failures = [r for r in await asyncio.gather(*work, return_exceptions=True) if isinstance(r, BaseException)]
            if failures:
                raise failures[0]

    async def _fetch(self) -> dict[TopicPartition, list[Any]]:
        """A batch of every partition that has records (getmany alone tends to give one
        partition's records at a time, which would leave the others waiting)."""
        fetched: dict[TopicPartition, list[Any]] = {}
        for tp in list(self._consumer.assignment()):
            with contextlib.suppress(IllegalStateError):  # revoked meanwhile
                fetched.update(await self._consumer.getmany(tp, timeout_ms=0, max_records=self.max_batch))
        if not fetched:
            fetched = await self._consumer.getmany(timeout_ms=200, max_records=self.max_batch)
        return fetched

    async def _run_partition(self, tp: TopicPartition, records: list[Any], handler: Handler) -> None:
        """The partition's records in batches of ``max_batch``; after a batch that did not
        commit, the rest waits: it is read again from that batch's start."""
        start = self._positions[tp]
        records = [r for r in records if r.offset >= start]
        for first in range(0, len(records), self.max_batch):
            position = self._positions.get(tp)
            if position is None:
                return  # the partition was lost
            committed = await self._run_batch(tp, position, records[first : first + self.max_batch], handler)
            if not committed:
                return

    async def _run_batch(self, tp: TopicPartition, start: int, records: list[Any], handler: Handler) -> bool:
        """One batch in its global transaction; whether it committed."""
        batch = SourceBatch(
            self.group,
            tp.topic,
            tp.partition,
            start,
            records[-1].offset,
            self._attempts.get(tp, 1),
            [
                SourceRecord(r.topic, r.partition, r.offset, r.key, r.value, tuple(r.headers), r.timestamp)
                for r in records
            ],
        )
        try:
            # Fenced by the group's generation: a member that lost the partition stops here.
            if not self.unsafe_offsets_after_commit:
                intent = intent_metadata(batch.last, batch.attempt)
                await self._consumer.commit({tp: OffsetAndMetadata(start, intent)})
        except (CommitFailedError, IllegalStateError) as exc:
            logger.info("partition lost before its batch began", partition=str(tp), error=repr(exc))
            self._positions.pop(tp, None)
            return False
        outcome = await self._transact(batch, handler)
        await self._after(tp, BatchOutcome(batch, outcome))
        return outcome == "committed"

    async def _transact(self, batch: SourceBatch, handler: Handler) -> str:
        """Run the batch's transaction; its outcome, ``committed`` or ``aborted``."""
        try:
            begun = await self._begin(batch)
        except Exception as exc:
            logger.warning("could not begin the batch's transaction", key=batch.idempotency_key, error=repr(exc))
            return await self._settle(batch, None)
        batch.gtid = begun.gtid
        if begun.replayed:
            # Another process began this very batch: it is not ours to run.
            return await self._settle(batch, batch.gtid)
        try:
            await handler(batch)
            for name, payload in batch.enlisted:
                await self.coordinator.enlist(batch.gtid, name, payload)
            kafka: dict[str, Any] = {"messages": batch.messages, "offsets": batch.offsets()}
            if self.unsafe_offsets_after_commit:
                del kafka["offsets"]
            await self.coordinator.enlist(batch.gtid, self.kafka_participant, kafka)
            await failpoints.hit("source.before_commit")
            view = await self.coordinator.commit(batch.gtid)
            await failpoints.hit("source.after_commit")
        except Exception as exc:
            logger.warning("batch failed", gtid=batch.gtid, key=batch.idempotency_key, error=repr(exc))
            return await self._settle(batch, batch.gtid)
        if view.outcome in _FINAL:
            kafka_branch = next((b for b in view.branches if b.name == self.kafka_participant), None)
            # Acknowledged by the Kafka participant: its offsets are committed already.
            batch.offsets_committed = (
                kafka_branch is not None and kafka_branch.state == "committed" and not kafka_branch.pending
            )
            return str(view.outcome)
        return await self._settle(batch, batch.gtid)

    async def _begin(self, batch: SourceBatch) -> Began:
        return await self.coordinator.begin(
            timeout_ms=self.transaction_timeout_ms, metadata=batch.metadata(), idempotency_key=batch.idempotency_key
        )

    async def _settle(self, batch: SourceBatch, gtid: str | None) -> str:
        """Bring the batch's transaction to its end: abort it if it is still open (whoever
        began it lost the partition, or failed), else wait for its outcome."""
        delay = 0.05
        while True:
            try:
                if gtid is None:
                    gtid = (await self._begin(batch)).gtid
                view = await self.coordinator.get(gtid)
                if view.state == "active":
                    view = await self.coordinator.abort(gtid)
                if view.state in _FINAL:
                    return view.state
            except CoordinatorError as exc:
                if exc.status == 404:
                    gtid = None  # forgotten; begin it again (it had no effect) and abort it
                logger.info("settling the batch's transaction", gtid=gtid, error=str(exc))
            except Exception as exc:
                logger.warning("the coordinator does not answer; settling later", gtid=gtid, error=repr(exc))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _after(self, tp: TopicPartition, done: BatchOutcome) -> None:
        batch = done.batch
        if done.outcome == "committed":
            if self.unsafe_offsets_after_commit:
                await self._consumer.commit({tp: batch.last + 1})
            elif not batch.offsets_committed:
                await self._wait_for_offset(tp, batch.last + 1)
            self._positions[tp] = batch.last + 1
            self._attempts.pop(tp, None)
            self.committed_batches += 1
            self.resumed_batches += done.resumed
            self.records += len(batch.records)
        else:
            self._attempts[tp] = batch.attempt + 1
            self._positions[tp] = batch.first
            self.aborted_batches += 1
            self._consumer.seek(tp, batch.first)
            if not done.resumed:
                await asyncio.sleep(self.retry_backoff)
        if self._on_outcome is not None:
            self._on_outcome(done)

    async def _wait_for_offset(self, tp: TopicPartition, offset: int) -> None:
        """Until the group's committed offset shows the batch (the Kafka participant
        commits it in phase 2, which may lag behind the decision)."""
        delay = 0.01
        while True:
            try:
                committed = await self._admin.list_consumer_group_offsets(self.group, partitions=[tp])
                found = committed.get(tp)
                if found is not None and found.offset >= offset:
                    return
            except KafkaError as exc:
                logger.info("reading the group's offsets failed", partition=str(tp), error=repr(exc))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    # -- taking a partition over ---------------------------------------------------------

    async def _resume(self, tp: TopicPartition) -> None:
        """Settle the batch the partition's intent names, if any, and seek past it or to it."""
        committed = (await self._admin.list_consumer_group_offsets(self.group, partitions=[tp])).get(tp)
        intent = None
        if committed is None or committed.offset < 0:
            start = (await self._consumer.beginning_offsets([tp]))[tp]
        else:
            start = committed.offset
            intent = parse_intent(committed.metadata)
        if intent is None:
            # Seek even to where the consumer stands: what it fetched before this resume
            # was dropped, and must be read again.
            self._positions[tp] = start
            self._attempts.pop(tp, None)
            self._consumer.seek(tp, start)
            return
        assert committed is not None  # an intent is read from a committed offset
        self.found_in_flight += 1
        last, attempt = intent
        batch = SourceBatch(self.group, tp.topic, tp.partition, start, last, attempt, [])
        try:
            # Prove the partition is ours at this generation before touching its batch.
            await self._consumer.commit({tp: OffsetAndMetadata(start, committed.metadata)})
        except (CommitFailedError, IllegalStateError) as exc:
            logger.info("partition lost before its resume", partition=str(tp), error=repr(exc))
            return
        outcome = await self._settle(batch, None)
        logger.info(
            "batch in flight found", partition=str(tp), first=start, last=last, attempt=attempt, outcome=outcome
        )
        self._consumer.seek(tp, last + 1 if outcome == "committed" else start)
        await self._after(tp, BatchOutcome(batch, outcome, resumed=True))


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, source: KafkaSource) -> None:
        self._source = source

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        # Let the batches in flight end first, so that the next owner finds none; but not
        # for ever: correctness does not rest on it (the next owner settles what it finds).
        source = self._source
        try:
            async with asyncio.timeout(source.handoff_wait):
                await source._working.acquire()
        except TimeoutError:
            logger.warning("giving partitions up with batches in flight", partitions=len(list(revoked)))
        else:
            source._working.release()
        for tp in revoked:
            source._positions.pop(tp, None)
            source._to_resume.discard(tp)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self._source._to_resume.update(assigned)
