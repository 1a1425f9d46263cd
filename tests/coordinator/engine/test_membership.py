"""A replica's membership: its lease, its readiness, fencing and takeover.

The log here is a stand-in that keeps the nodes table in memory with the rules of a
shared log (a live lease, an epoch bumped by a takeover); the PostgreSQL log's own
tests hold it to those rules on a real server.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from coordinator.engine import Membership
from coordinator.log import Fenced, LogUnavailable, SQLiteLog
from coordinator.records import NodeRecord
from twopc_core.testing import FakeClock


class SharedNodes(SQLiteLog):
    """The nodes table of a shared log, in memory, on the database clock ``clock``."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(":memory:")
        self.clock = clock
        self.rows: dict[str, NodeRecord] = {}
        self.me = ""
        self.reachable = True
        self.taken: list[str] = []

    @property
    def shared(self) -> bool:
        return True

    def _check(self) -> None:
        if not self.reachable:
            raise LogUnavailable("the database does not answer")

    async def join(self, node_id: str, advertise_url: str, lease: float) -> NodeRecord:
        self._check()
        old = self.rows.get(node_id)
        self.me = node_id
        epoch = (old.epoch if old else 0) + 1
        self.rows[node_id] = NodeRecord(node_id, epoch, advertise_url, self.clock.now() + lease, True)
        self.lease = lease
        return self.rows[node_id]

    async def renew(self) -> NodeRecord:
        self._check()
        row = self.rows[self.me]
        if row.taken_over_by is not None:
            raise Fenced("taken over")
        self.rows[self.me] = replace(row, lease_expires_at=self.clock.now() + self.lease)
        return self.rows[self.me]

    async def nodes(self) -> list[NodeRecord]:
        self._check()
        return [replace(r, alive=r.lease_expires_at > self.clock.now()) for r in self.rows.values()]

    async def take_over(self, node: NodeRecord) -> int | None:
        row = self.rows[node.node_id]
        if row.epoch != node.epoch or row.lease_expires_at > self.clock.now():
            return None
        self.rows[node.node_id] = replace(row, epoch=row.epoch + 1, taken_over_by=self.me)
        self.taken.append(node.node_id)
        return 3


class Calls:
    def __init__(self) -> None:
        self.adopted = 0
        self.dropped = 0

    async def adopt(self) -> None:
        self.adopted += 1

    async def drop(self) -> None:
        self.dropped += 1


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def nodes(clock: FakeClock) -> SharedNodes:
    return SharedNodes(clock)


def membership(nodes: SharedNodes, clock: FakeClock, calls: Calls, node_id: str = "c1") -> Membership:
    return Membership(nodes, node_id, f"http://{node_id}", 3.0, calls.adopt, calls.drop, monotonic=clock.monotonic)


async def test_a_joined_replica_is_ready_until_its_lease_could_have_run_out(
    nodes: SharedNodes, clock: FakeClock
) -> None:
    m = membership(nodes, clock, Calls())
    assert not m.ready
    await m.join()
    assert m.ready
    clock.advance(2.9)
    assert m.ready
    clock.advance(0.2)
    assert not m.ready


async def test_a_renewal_keeps_the_replica_ready(nodes: SharedNodes, clock: FakeClock) -> None:
    m = membership(nodes, clock, Calls())
    await m.join()
    clock.advance(2.0)
    await m.tick()
    clock.advance(2.0)
    assert m.ready


async def test_a_log_that_does_not_answer_makes_the_replica_not_ready_at_once(
    nodes: SharedNodes, clock: FakeClock
) -> None:
    m = membership(nodes, clock, Calls())
    await m.join()
    nodes.reachable = False
    await m.tick()
    assert not m.ready
    nodes.reachable = True
    await m.tick()
    assert m.ready


async def test_a_fenced_replica_drops_its_work_joins_with_a_new_epoch_and_adopts(
    nodes: SharedNodes, clock: FakeClock
) -> None:
    calls = Calls()
    m = membership(nodes, clock, calls)
    first = await m.join()
    nodes.rows["c1"] = replace(nodes.rows["c1"], taken_over_by="c2")
    await m.tick()
    assert (calls.dropped, calls.adopted) == (1, 1)
    assert m.me is not None and m.me.epoch == first.epoch + 1
    assert m.ready


async def test_a_replica_whose_lease_ran_out_is_taken_over_once(nodes: SharedNodes, clock: FakeClock) -> None:
    calls = Calls()
    dead = membership(nodes, clock, Calls(), "c2")
    await dead.join()
    alive = membership(nodes, clock, calls)
    await alive.join()
    await alive.tick()
    assert nodes.taken == []  # c2's lease is still live
    clock.advance(3.5)
    await alive.tick()
    await alive.tick()
    assert nodes.taken == ["c2"]
    assert alive.takeovers == 1 and calls.adopted == 1


async def test_a_live_replica_is_not_taken_over_on_request(nodes: SharedNodes, clock: FakeClock) -> None:
    other = membership(nodes, clock, Calls(), "c2")
    await other.join()
    m = membership(nodes, clock, Calls())
    await m.join()
    assert not await m.take_over("c2")
    assert m.url_of("c2") == "http://c2"


async def test_a_log_of_one_replica_is_ready_once_joined_and_for_ever(clock: FakeClock) -> None:
    m = Membership(SQLiteLog(":memory:"), "c1", "http://c1", 3.0, Calls().adopt, Calls().drop, clock.monotonic)
    await m.join()
    clock.advance(3600)
    assert m.ready and not m.shared
