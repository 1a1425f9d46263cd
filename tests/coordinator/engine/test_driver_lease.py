"""The driver on a shared log when its lease goes: what was claimed or read under the
epoch that lost it never becomes work in memory (another replica may own it now)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from adapters.postgres.testing import scratch_database, server_dsn
from coordinator.config import TransactionSettings
from coordinator.engine import Coordinator, NotReady
from coordinator.log import PostgresLog
from coordinator.log import _pg_writer as pg_writer
from coordinator.transport import Backoff, Transport
from twopc_core import failpoints
from twopc_core.testing import wait_until


@pytest.fixture
async def coordinator() -> AsyncIterator[Coordinator]:
    async with scratch_database(server_dsn(), "driver") as dsn:
        log = PostgresLog(dsn, pool_size=3)
        await log.open()
        transport = Transport([], Backoff(0.01, 0.05), 5.0)
        await transport.start()
        replica = Coordinator("c1", log, transport, TransactionSettings(), advertise_url="http://c1.test", lease=3.0)
        await replica.start()
        try:
            yield replica
        finally:
            await replica.close()
            await transport.close()
            await log.close()


async def test_a_transaction_claimed_while_the_lease_was_lost_is_not_kept_in_memory(
    coordinator: Coordinator, monkeypatch: pytest.MonkeyPatch
) -> None:
    reached, release = asyncio.Event(), asyncio.Event()
    real = failpoints.hit

    async def hit(name: str) -> None:
        if name == pg_writer.BEFORE_COMMIT and not release.is_set():
            reached.set()
            await release.wait()  # the claim's batch has passed its fence, not committed yet
        await real(name)

    monkeypatch.setattr(failpoints, "hit", hit)
    beginning = asyncio.create_task(coordinator.begin(idempotency_key="k1", request_hash="h1"))
    await asyncio.wait_for(reached.wait(), 5)
    # The lease is lost meanwhile: the work in memory is dropped, and the replica joins
    # again (waiting for the batch's node row) and adopts what the log says it owns.
    rejoining = asyncio.create_task(coordinator.membership.fenced())
    await wait_until(lambda: not coordinator.ready, message="the replica to drop its work")
    release.set()
    with pytest.raises(NotReady):
        await asyncio.wait_for(beginning, 10)
    await asyncio.wait_for(rejoining, 10)
    # The claim made it into the log under the old epoch; adopted again, it is presumed
    # aborted rather than left active in memory beside whoever might own it.
    (view,) = await coordinator.page(None, 10, None)
    assert (view.record.idempotency_key, view.record.decision) == ("k1", "aborted")
