"""This replica's place among the others over a shared log.

It joins the log with a new epoch and a lease, renews the lease several times per
lease, watches the other replicas' leases, and takes over one whose lease ran out. The
database's clock alone decides whether a lease is live; this process only keeps a
conservative estimate of its own (from the moment it asked for a renewal), to stop
calling itself ready before the database could think otherwise.

A log of one process (SQLite) is a cluster of one: joining is all there is to it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable

import structlog

from coordinator.log import DecisionLog, Fenced, LogUnavailable
from coordinator.records import NodeRecord

__all__ = ["Membership"]

log = structlog.get_logger(__name__)

#: Renewals per lease: a replica that misses a few still keeps its lease.
_RENEWALS_PER_LEASE = 4


class Membership:
    """Joins, renews, watches and takes over. The coordinator hears of it through
    ``adopt`` (take into memory the unfinished transactions the log says this replica
    owns: after a takeover, or after joining again) and ``drop`` (this replica lost its
    lease: forget the work in memory, another replica may own it now)."""

    def __init__(
        self,
        log_store: DecisionLog,
        node_id: str,
        advertise_url: str,
        lease: float,
        adopt: Callable[[], Awaitable[None]],
        drop: Callable[[], Awaitable[None]],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log_store
        self.node_id = node_id
        self.advertise_url = advertise_url
        self.lease = lease
        self._adopt = adopt
        self._drop = drop
        self._rejoining: asyncio.Lock = asyncio.Lock()
        self._monotonic = monotonic
        #: This replica as the log last confirmed it.
        self.me: NodeRecord | None = None
        #: Every replica the log knows, as last read.
        self.replicas: dict[str, NodeRecord] = {}
        #: Until when, by this process's clock, the lease is surely still live.
        self._lease_surely_until = 0.0
        self._reachable = False
        self.takeovers = 0

    @property
    def shared(self) -> bool:
        return self._log.shared

    @property
    def ready(self) -> bool:
        """Holding a live lease on a log that answers."""
        if not self.shared:
            return self.me is not None
        return self._reachable and self._monotonic() < self._lease_surely_until

    @property
    def lease_remaining(self) -> float:
        """Seconds the lease is surely live for still, by this process's clock (0 when
        it is not); infinite for a replica on a log of its own, which needs no lease."""
        if not self.shared:
            return math.inf if self.me is not None else 0.0
        return max(0.0, self._lease_surely_until - self._monotonic())

    async def join(self) -> NodeRecord:
        """A new epoch and a lease (waits out a previous incarnation's lease)."""
        asked_at = self._monotonic()
        self.me = await self._log.join(self.node_id, self.advertise_url, self.lease)
        self._confirmed(asked_at)
        log.info("joined the cluster", node=self.node_id, epoch=self.me.epoch, url=self.advertise_url)
        return self.me

    async def run(self) -> None:
        """Renew the lease and watch the others, for as long as the replica runs. A
        takeover (which may move thousands of transactions into memory) runs beside the
        renewals, never in their way: a taker that let its own lease run out would be
        fenced in turn."""
        watching: asyncio.Task[None] | None = None
        try:
            while True:
                await asyncio.sleep(self.lease / _RENEWALS_PER_LEASE)
                try:
                    renewed = await self.renew()
                except Exception:
                    log.exception("cluster round failed")
                    continue
                if renewed and (watching is None or watching.done()):
                    watching = asyncio.create_task(self._watch(), name="take over")
        finally:
            if watching is not None:
                watching.cancel()

    async def tick(self) -> None:
        """One round: renew this replica's lease, then take over any replica whose lease
        ran out and that nobody took over yet."""
        if await self.renew():
            await self.take_over_the_dead()

    async def renew(self) -> bool:
        """Renew this replica's lease; False if the log does not answer or fenced it."""
        asked_at = self._monotonic()
        try:
            self.me = await self._log.renew()
        except Fenced:
            await self.fenced()
            return False
        except LogUnavailable as exc:
            if self._reachable:
                log.error("the log does not answer: not ready", error=str(exc))
            self._reachable = False
            return False
        self._confirmed(asked_at)
        return True

    async def take_over_the_dead(self) -> None:
        """Take over every replica whose lease ran out and that nobody took over yet."""
        await self.refresh()
        for replica in list(self.replicas.values()):
            if replica.node_id != self.node_id and not replica.alive and replica.taken_over_by is None:
                await self.take_over(replica.node_id)

    async def _watch(self) -> None:
        try:
            await self.take_over_the_dead()
        except Fenced:
            await self.fenced()
        except Exception:
            log.exception("taking over failed; trying again next round")

    async def fenced(self) -> None:
        """This replica's lease is gone (a renewal or a write was fenced): drop the work in
        memory, join again with a new epoch, and adopt what the log still says is ours."""
        if self._rejoining.locked():
            return  # already under way
        async with self._rejoining:
            log.error("lease lost: this replica was fenced; dropping its work and joining again", node=self.node_id)
            self._reachable = False
            await self._drop()
            await self.join()
            await self._adopt()

    async def refresh(self) -> None:
        """Read every replica's row again."""
        self.replicas = {replica.node_id: replica for replica in await self._log.nodes()}

    async def take_over(self, node_id: str) -> bool:
        """Fence ``node_id`` and take its unfinished work, if its lease ran out and nobody
        was first; True when this replica did it. Called by the watch and by a request
        that must be answered about a transaction of a replica that is gone."""
        replica = self.replicas.get(node_id)
        if replica is None or replica.alive or node_id == self.node_id:
            await self.refresh()
            replica = self.replicas.get(node_id)
            if replica is None or replica.alive or node_id == self.node_id:
                return False
        moved = await self._log.take_over(replica)
        await self.refresh()
        if moved is None:
            return False
        self.takeovers += 1
        log.warning("took over a replica whose lease ran out", node=node_id, epoch=replica.epoch, transactions=moved)
        await self._adopt()
        return True

    def fenced_for_good(self, node_id: str) -> bool:
        """Whether ``node_id``, as last read, can no longer write: some replica took it
        over (bumped its epoch), or the log has never heard of it."""
        replica = self.replicas.get(node_id)
        return replica is None or replica.taken_over_by is not None

    def url_of(self, node_id: str) -> str | None:
        """Where a live replica is reached; None when it is not known to be live."""
        replica = self.replicas.get(node_id)
        return replica.advertise_url if replica is not None and replica.alive else None

    def _confirmed(self, asked_at: float) -> None:
        # The database set the lease after we asked: from the asking, it lasts at least this.
        self._lease_surely_until = asked_at + self.lease
        self._reachable = True
