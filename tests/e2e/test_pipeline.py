"""Consume → process → produce exactly once, with real processes on the real broker and
PostgreSQL: the pipeline, the coordinator, the bank and the events service, crashed at
the steps that matter and restarted; then every input event is in the ledger once, in
the output topic once, and the group's offsets are at the end of the input."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.kafka.testing import bootstrap_servers
from adapters.postgres.testing import scratch_database, server_dsn
from chaos.pipeline_check import PipelineReport, check_pipeline
from chaos.pipeline_stack import EVENTS, PipelineStack
from twopc_core.failpoints import CRASH_EXIT_CODE
from twopc_core.testing import wait_until

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def kafka() -> str:
    return bootstrap_servers()


@pytest.fixture
async def ledger_dsn() -> AsyncIterator[str]:
    async with scratch_database(server_dsn(), "pipeline") as dsn:
        yield dsn


@pytest.fixture
def stack(tmp_path: Path, kafka: str, ledger_dsn: str) -> Iterator[PipelineStack]:
    pipeline = PipelineStack(tmp_path / "stack", kafka, ledger_dsn, max_batch=10)
    try:
        yield pipeline
    finally:
        pipeline.stop()


async def all_done(stack: PipelineStack, ledger_dsn: str, timeout: float = 60.0) -> PipelineReport:
    """The checker's report once it finds nothing wrong; its last report if that never comes."""
    last: list[PipelineReport] = []

    async def clean() -> PipelineReport | None:
        report = await check_pipeline(stack.bootstrap, stack.input_topic, stack.output_topic, stack.group, ledger_dsn)
        last[:] = [report]
        return report if report.ok else None

    try:
        return await wait_until(clean, timeout=timeout, interval=0.5, message="every event processed once")
    except TimeoutError:
        raise AssertionError(
            f"the pipeline did not finish cleanly: {last[0].violations if last else 'no report'}"
        ) from None


async def test_every_input_event_is_booked_and_published_once(stack: PipelineStack, ledger_dsn: str) -> None:
    await stack.start()
    await stack.produce(45)
    report = await all_done(stack, ledger_dsn)
    assert (report.inputs, report.booked, report.published) == (45, 45, 45)
    assert sum(end for _, end in report.offsets.values()) >= 45


async def pipeline_health(stack: PipelineStack, name: str = "pipeline-1") -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(stack.pipelines[name].ready_url) as response:
        return dict(await response.json())


@pytest.mark.parametrize(
    ("node", "failpoint", "must_find_in_flight"),
    [
        # The commit is done, nothing after it: the offsets say so.
        ("pipeline-1", "source.after_commit", False),
        # The bank has prepared, the commit never came: the restarted pipeline finds the
        # batch by its intent, aborts it and reads it again.
        ("pipeline-1", "source.before_commit", True),
        # Kafka published, its transaction not committed: the coordinator commits it again.
        (EVENTS, "kafka.after_publish_before_marker", False),
    ],
)
async def test_a_crash_at_a_step_that_matters_leaves_every_event_taking_effect_once(
    stack: PipelineStack, ledger_dsn: str, node: str, failpoint: str, must_find_in_flight: bool
) -> None:
    name = stack.events if node == EVENTS else node
    target = stack.nodes[name]
    target.env["TWOPC_FAILPOINTS"] = f"{failpoint}=1*crash"
    await stack.start()
    await stack.produce(30)

    assert await wait_until(lambda: not target.running, timeout=60, message=f"{name} crashed at {failpoint}")
    assert target.wait_exit() == CRASH_EXIT_CODE
    target.env.pop("TWOPC_FAILPOINTS")
    await stack.start_node(name)
    await stack.produce(10)

    report = await all_done(stack, ledger_dsn)
    assert (report.inputs, report.booked, report.published) == (40, 40, 40)
    if must_find_in_flight:  # other partitions' batches may have been in flight too
        assert (await pipeline_health(stack))["found_in_flight"] >= 1


async def test_a_zombie_pipeline_cannot_commit_the_batch_its_successor_took_over(
    tmp_path: Path, kafka: str, ledger_dsn: str
) -> None:
    stack = PipelineStack(tmp_path / "stack", kafka, ledger_dsn, instances=2, max_batch=10)
    zombie, successor = stack.pipelines["pipeline-1"], "pipeline-2"
    # Stopped with its batch prepared, for longer than the group's session: it is replaced.
    zombie.env["TWOPC_FAILPOINTS"] = "source.before_commit=1*stop"
    try:
        await stack.start()
        await stack.produce(30)
        assert await wait_until(lambda: zombie.stopped, timeout=60, message="the pipeline stopped at its failpoint")

        async def taken_over() -> bool:
            return (await pipeline_health(stack, successor))["found_in_flight"] >= 1

        # The successor found the zombie's batch by its intent and aborted it.
        assert await wait_until(taken_over, timeout=60, interval=0.5, message="the batch taken over")
        zombie.kill(signal.SIGCONT)  # the zombie wakes and goes on with its batch
        await stack.produce(10)
        report = await all_done(stack, ledger_dsn)
        assert (report.inputs, report.booked, report.published) == (40, 40, 40)
        assert zombie.running
    finally:
        stack.stop()
