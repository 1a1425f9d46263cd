"""The mock queue as a 2PC resource: prepare stages items, commit appends them.

The queue holds its branches' state in its own database: a branch is prepared while
its items are staged and committed once they are in the queue, each written in one
SQLite transaction with the work, so a vote costs the participant one durable write.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from adapters.mockqueue.faults import FaultSwitch
from adapters.mockqueue.store import QueueStore
from participant_sdk import BranchStatus, PrepareResult, Resource

__all__ = ["MockQueueResource", "validate_payload"]


def validate_payload(payload: Any) -> list[Any]:
    """The items of a ``{"items": [...]}`` payload; ValueError saying what is wrong."""
    if not isinstance(payload, dict):
        raise ValueError(f'payload must be an object {{"items": [...]}}, not {type(payload).__name__}')
    if set(payload) != {"items"}:
        unexpected = sorted(set(payload) - {"items"})
        if unexpected:
            raise ValueError(f'payload has unexpected fields {unexpected}; expected only "items"')
        raise ValueError('payload has no "items"')
    items = payload["items"]
    if not isinstance(items, list):
        raise ValueError(f'payload "items" must be a list, not {type(items).__name__}')
    return items


class MockQueueResource(Resource):
    holds_branch_state = True

    def __init__(self, store: QueueStore, faults: FaultSwitch | None = None) -> None:
        self.store = store
        self.faults = faults or FaultSwitch()

    async def start(self) -> None:
        await self.store.open()

    async def close(self) -> None:
        await self.store.close()

    async def prepare(self, gtid: str, branch: str, payload: Any) -> PrepareResult:
        await self._delay()
        try:
            items = validate_payload(payload)
        except ValueError as exc:
            return PrepareResult.no(str(exc))
        if self.faults.current.vote == "no":
            return PrepareResult.no("fault injected: vote no")
        if not items:
            return PrepareResult.read_only()
        try:
            await self.store.stage(gtid, branch, items)
        except ValueError as exc:
            return PrepareResult.no(str(exc))
        self.faults.crash_if("prepare")
        return PrepareResult.yes()

    async def commit(self, gtid: str, branch: str) -> None:
        await self._delay()
        await self.store.commit(gtid, branch)
        self.faults.crash_if("commit")

    async def abort(self, gtid: str, branch: str) -> None:
        await self.store.drop(gtid, branch)

    async def recover(self) -> list[tuple[str, str]]:
        return self.store.staged()

    async def branch_status(self, gtid: str, branch: str) -> BranchStatus:
        if self.store.is_staged(gtid, branch):
            return BranchStatus.PREPARED
        if await self.store.was_committed(gtid, branch):
            return BranchStatus.COMMITTED
        return BranchStatus.UNKNOWN

    def metric_families(self) -> Iterator[Metric]:
        """The queue's own figures, for the service's ``/metrics``."""
        yield GaugeMetricFamily(
            "twopc_mockqueue_staged_branches",
            "Branches whose items are staged, waiting for their outcome.",
            len(self.store.staged()),
        )
        yield GaugeMetricFamily(
            "twopc_mockqueue_staged_items", "Items staged by those branches.", self.store.staged_items()
        )
        yield CounterMetricFamily(
            "twopc_mockqueue_items_published",
            "Items committed to the queue since the service started.",
            self.store.published,
        )

    async def _delay(self) -> None:
        delay_ms = self.faults.current.delay_ms
        if delay_ms:
            await asyncio.sleep(delay_ms / 1000)
