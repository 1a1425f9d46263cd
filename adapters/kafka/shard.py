"""One shard: a partition of the stage topic and the one transactional producer that
writes it, with the branches the partition holds. A commit's Kafka transaction carries
the branch's messages, its marker and its consumer offsets (``send_offsets_to_transaction``).

A producer runs one Kafka transaction at a time, so the shard queues its work (stage,
commit, abort, forget) and a single worker runs it; whatever is waiting when the
previous transaction ends goes into the next one together (group commit), each branch's
records in the order they were asked for.

When a transaction fails, its outcome may be unknown (a timeout, a lost connection,
a commit the broker took but whose answer never came). The shard then fences: a new
producer with the same transactional id makes the broker finish the old transaction,
one way or the other; re-reading the partition tells which. Work already done is
answered done, the rest is tried again, at most :data:`MAX_ATTEMPTS` times.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from adapters.kafka.clients import fenced_producer, read_stage, stop_quietly
from adapters.kafka.settings import KafkaSettings
from adapters.kafka.stage import (
    BranchEntry,
    StageEntryState,
    StageRecord,
    marker_record,
    tombstone,
)
from twopc_core import failpoints

__all__ = ["MAX_ATTEMPTS", "KafkaUnavailableError", "Shard"]

logger = structlog.get_logger("adapters.kafka")

#: Tries of one piece of work before its caller hears the error.
MAX_ATTEMPTS = 3
#: Bytes of staged or published messages one grouped Kafka transaction may carry
#: (a single larger piece of work still goes, alone).
_GROUP_BYTES = 8 * 1024 * 1024

#: How long a failed producer may take to stop before it is abandoned.
_ABANDON_AFTER = 2.0
#: Between tries to recover a shard that has no work (seconds, doubling up to the cap).
_IDLE_BACKOFF_FIRST = 0.25
_IDLE_BACKOFF_CAP = 5.0

BranchKey = tuple[str, str]  # (gtid, branch)


class KafkaUnavailableError(RuntimeError):
    """Kafka did not take the work after :data:`MAX_ATTEMPTS` tries."""


class _Kind(enum.Enum):
    STAGE = "stage"
    COMMIT = "commit"
    ABORT = "abort"
    FORGET = "forget"


@dataclass(eq=False)
class _Work:
    kind: _Kind
    keys: Sequence[BranchKey]
    future: asyncio.Future[None]
    #: For STAGE: the entry it creates and the chunk records that stage it.
    entry: BranchEntry | None = None
    records: Sequence[StageRecord] = ()
    size: int = 0
    attempts: int = field(default=0)


class _Done(Exception):
    """Work that needs no Kafka transaction (already applied)."""


class Shard:
    def __init__(self, index: int, settings: KafkaSettings, clock: Callable[[], float] = time.time) -> None:
        self.index = index
        self.settings = settings
        self.entries: dict[BranchKey, BranchEntry] = {}
        self.transactions = 0
        self.recoveries = 0
        self._clock = clock
        self._producer: AIOKafkaProducer | None = None
        self._queue: deque[_Work] = deque()
        self._wakeup = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._closed = False
        self._idle_backoff = _IDLE_BACKOFF_FIRST

    # -- lifecycle -------------------------------------------------------------------

    async def fence(self) -> None:
        """Start this shard's producer, fencing every older one (call before reading)."""
        self._producer = await fenced_producer(self.settings, self.index)

    def start(self, entries: dict[BranchKey, BranchEntry]) -> None:
        """Take the branches read from the partition and begin taking work."""
        self.entries = entries
        self._worker = asyncio.create_task(self._run(), name=f"kafka-shard-{self.index}")

    async def close(self) -> None:
        self._closed = True
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None
        while self._queue:
            work = self._queue.popleft()
            if not work.future.done():
                work.future.set_exception(KafkaUnavailableError("the Kafka participant is closing"))
        if self._producer is not None:
            await stop_quietly(self._producer, self.settings.request_timeout)
            self._producer = None

    # -- work ------------------------------------------------------------------------

    async def stage(self, entry: BranchEntry, records: Sequence[StageRecord], size: int) -> None:
        """Durably stage a prepared branch (its chunk records) in one Kafka transaction."""
        await self._submit(_Kind.STAGE, [(entry.gtid, entry.branch)], entry=entry, records=records, size=size)

    async def commit(self, key: BranchKey) -> None:
        """Publish the branch's messages and its COMMITTED marker in one Kafka transaction."""
        entry = self.entries.get(key)
        size = sum(len(m.value or b"") for m in (entry.messages or ())) if entry else 0
        await self._submit(_Kind.COMMIT, [key], size=size)

    async def abort(self, key: BranchKey) -> None:
        await self._submit(_Kind.ABORT, [key])

    async def forget(self, keys: Sequence[BranchKey]) -> None:
        """Tombstone the markers of finished branches."""
        await self._submit(_Kind.FORGET, keys)

    async def _submit(
        self,
        kind: _Kind,
        keys: Sequence[BranchKey],
        *,
        entry: BranchEntry | None = None,
        records: Sequence[StageRecord] = (),
        size: int = 0,
    ) -> None:
        if self._closed:
            raise KafkaUnavailableError("the Kafka participant is closed")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(_Work(kind, keys, future, entry=entry, records=records, size=size))
        self._wakeup.set()
        # A caller that gives up does not take the work back: it is queued, and will be done.
        await asyncio.shield(future)

    # -- the worker ------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._producer is None:
                    await self._recover_when_idle()
                    continue
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            group = self._take()
            try:
                await self._process(group)
            except Exception as exc:  # a bug here must not leave callers waiting forever
                logger.exception("kafka shard worker failed", shard=self.index)
                for work in group:
                    _fail(work, exc)

    def _take(self) -> list[_Work]:
        group = [self._queue.popleft()]
        if group[0].attempts:
            return group  # a retry goes alone, so that one bad branch cannot fail its neighbours again
        size = group[0].size
        while (
            self._queue
            and not self._queue[0].attempts
            and len(group) < self.settings.max_group
            and size + self._queue[0].size <= _GROUP_BYTES
        ):
            work = self._queue.popleft()
            size += work.size
            group.append(work)
        return group

    async def _process(self, group: list[_Work]) -> None:
        todo: list[_Work] = []
        for work in group:
            try:
                self._check(work)
            except _Done:
                _resolve(work)
            except Exception as exc:
                _fail(work, exc)
            else:
                todo.append(work)
        if not todo:
            return
        try:
            if self._producer is None:
                await self._recover()
            async with asyncio.timeout(self.settings.request_timeout):
                await self._transaction(todo)
        except Exception as exc:
            await self._after_failure(todo, exc)
            return
        for work in todo:
            self._apply(work)
            _resolve(work)

    def _check(self, work: _Work) -> None:
        """Raise :class:`_Done` if the work is already applied, an error if it cannot be."""
        if work.kind is _Kind.STAGE:
            assert work.entry is not None
            found = self.entries.get(work.keys[0])
            if found is not None:
                if found.digest == work.entry.digest and found.state is not StageEntryState.ABORTED:
                    raise _Done
                raise ValueError(f"branch {work.keys[0][1]} of {work.keys[0][0]} is already staged as {found.state}")
            return
        if work.kind is _Kind.FORGET:
            if not any(key in self.entries for key in work.keys):
                raise _Done
            return
        key = work.keys[0]
        entry = self.entries.get(key)
        state = entry.state if entry is not None else None
        if work.kind is _Kind.COMMIT:
            if state is StageEntryState.COMMITTED:
                raise _Done
            if state is not StageEntryState.PREPARED:
                raise RuntimeError(f"cannot commit branch {key[1]} of {key[0]}: it is {state or 'not staged here'}")
        else:  # ABORT
            if state is None or state is StageEntryState.ABORTED:
                raise _Done
            if state is StageEntryState.COMMITTED:
                raise RuntimeError(f"cannot abort branch {key[1]} of {key[0]}: it is already committed")

    async def _transaction(self, todo: list[_Work]) -> None:
        producer = self._producer
        assert producer is not None
        topic, partition = self.settings.topic, self.index
        now = self._clock()
        await producer.begin_transaction()
        sent: list[asyncio.Future[object]] = []

        async def send(record: StageRecord) -> None:
            headers = list(record.headers)
            sent.append(await producer.send(topic, record.value, record.key, partition, headers=headers))

        publishing = staging = False
        # Offsets per consumer group; of two branches that commit the same partition, the
        # later one's offset stands, as if they had been committed one after the other.
        offsets: dict[str, dict[TopicPartition, OffsetAndMetadata]] = {}
        for work in todo:
            if work.kind is _Kind.STAGE:
                staging = True
                for record in work.records:
                    await send(record)
            elif work.kind is _Kind.FORGET:
                for gtid, branch in work.keys:
                    if (gtid, branch) in self.entries:
                        await send(tombstone(branch, gtid))
            else:
                gtid, branch = work.keys[0]
                entry = self.entries[(gtid, branch)]
                if work.kind is _Kind.COMMIT:
                    publishing = True
                    for message in entry.messages or ():
                        future = await producer.send(
                            message.topic, message.value, message.key, message.partition, headers=list(message.headers)
                        )
                        sent.append(future)
                    if entry.offsets is not None:
                        group = offsets.setdefault(entry.offsets.group, {})
                        for p in entry.offsets.partitions:
                            group[TopicPartition(p.topic, p.partition)] = OffsetAndMetadata(p.offset, p.metadata)
                state = StageEntryState.COMMITTED if work.kind is _Kind.COMMIT else StageEntryState.ABORTED
                for chunk in range(entry.chunks):
                    await send(tombstone(branch, gtid, chunk))
                await send(marker_record(branch, gtid, state, now, entry.chunks))
        for group_id, committed in offsets.items():
            await producer.send_offsets_to_transaction(committed, group_id)
        await asyncio.gather(*sent)
        # The records are on the broker, not yet visible to read_committed consumers.
        if publishing:
            await failpoints.hit("kafka.after_publish_before_marker")
        if staging:
            await failpoints.hit("kafka.after_stage_before_marker")
        await producer.commit_transaction()
        self.transactions += 1
        # Committed, but the caller does not know it yet: the "outcome unknown" case.
        if publishing:
            await failpoints.hit("kafka.after_publish_committed")
        if staging:
            await failpoints.hit("kafka.after_stage_committed")

    def _apply(self, work: _Work) -> None:
        now = self._clock()
        if work.kind is _Kind.STAGE:
            assert work.entry is not None
            self.entries[work.keys[0]] = work.entry
        elif work.kind is _Kind.FORGET:
            for key in work.keys:
                self.entries.pop(key, None)
        else:
            entry = self.entries[work.keys[0]]
            entry.state = StageEntryState.COMMITTED if work.kind is _Kind.COMMIT else StageEntryState.ABORTED
            entry.at = now
            entry.messages = entry.offsets = None  # published or dropped: no longer needed

    async def _after_failure(self, todo: list[_Work], error: Exception) -> None:
        logger.warning(
            "kafka transaction failed; fencing and re-reading the shard",
            shard=self.index,
            branches=len(todo),
            error=repr(error),
        )
        try:
            await self._recover()
        except Exception as exc:
            logger.error("kafka shard recovery failed", shard=self.index, error=repr(exc))
            error = exc
        retry: list[_Work] = []
        for work in todo:
            try:
                self._check(work)
            except _Done:
                _resolve(work)
                continue
            except Exception as exc:
                _fail(work, exc)
                continue
            work.attempts += 1
            if work.attempts >= MAX_ATTEMPTS:
                _fail(work, KafkaUnavailableError(f"Kafka did not take the {work.kind.value}: {error!r}"))
            else:
                retry.append(work)
        self._queue.extendleft(reversed(retry))

    async def _recover_when_idle(self) -> None:
        """Recover with nothing queued, or wait a while for work (which recovers too).

        A transaction of ours that failed, when recovering failed as well (the broker was
        away), may still be open on the broker: every ``read_committed`` consumer of its
        partitions waits on it until the broker's transaction timeout. Fencing it as soon
        as the broker answers again ends that.
        """
        try:
            await self._recover()
        except Exception as exc:
            logger.info("kafka shard still cannot recover; trying again", shard=self.index, error=repr(exc))
            self._idle_backoff = min(self._idle_backoff * 2, _IDLE_BACKOFF_CAP)
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self._idle_backoff)
        else:
            self._idle_backoff = _IDLE_BACKOFF_FIRST
            logger.info("kafka shard recovered while idle", shard=self.index)

    async def _recover(self) -> None:
        """Fence the shard's producer and rebuild its branches from the partition."""
        self.recoveries += 1
        old, self._producer = self._producer, None
        if old is not None:
            # No need to wait for it: the new producer fences it whatever it is doing.
            await stop_quietly(old, _ABANDON_AFTER)
        producer = await fenced_producer(self.settings, self.index)
        try:
            folds = await read_stage(self.settings, [self.index])
        except BaseException:
            await stop_quietly(producer, self.settings.request_timeout)
            raise
        fold = folds[self.index]
        self.entries = fold.finish()
        for problem in fold.problems:
            logger.error("stage record not understood", shard=self.index, problem=problem)
        self._producer = producer


def _resolve(work: _Work) -> None:
    if not work.future.done():
        work.future.set_result(None)


def _fail(work: _Work, exc: BaseException) -> None:
    if not work.future.done():
        work.future.set_exception(exc)
