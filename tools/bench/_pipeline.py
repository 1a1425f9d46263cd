"""The pipeline workload: events per second end to end through ``twopc pipeline serve``
(read an order, book it in the bank's ledger, publish it accepted, exactly once), beside
the same consumer doing the same writes without a coordinator (at least once).

Both drain a backlog of the same size, written to their input topic before they start,
in batches of the same size; the rate is counted from the first event booked to the
last, so that joining the consumer group is not part of it.

The baseline is the consumer an application would write without twopc: read a batch
(``read_committed``), insert its ledger rows in one PostgreSQL transaction, send its
output messages (an idempotent producer, no Kafka transaction), then commit the offsets.
A crash between those steps processes a batch again: that is what it does not pay for.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from psycopg_pool import AsyncConnectionPool

from adapters.kafka.pipeline import order_of
from adapters.kafka.source import SourceRecord
from adapters.kafka.topics import create_topic, delete_topics, publish
from adapters.postgres.ledger import LEDGER_SCHEMA, ledger_size
from chaos.pipeline_stack import PipelineStack, order_event
from tools.bench._report import machine, process_cpu_seconds
from tools.bench._resources import kafka_bootstrap, postgres_server, run_database
from tools.bench._workload import Progress

__all__ = ["bench_pipeline", "plot_pipeline", "print_pipeline"]

#: How often the ledger is counted while a backlog drains.
_POLL = 0.1


async def bench_pipeline(
    directory: Path,
    events: int,
    max_batch: int,
    progress: Progress,
    *,
    postgres_dsn: str | None = None,
    bootstrap: str | None = None,
) -> dict[str, Any]:
    server = postgres_server(postgres_dsn)
    broker = kafka_bootstrap(bootstrap)
    run_id = secrets.token_hex(3)
    async with run_database(server, f"twopc_bench_{run_id}_ledger") as ledger_dsn:
        async with run_database(server, f"twopc_bench_{run_id}_baseline") as baseline_dsn:
            stack = PipelineStack(directory / "stack", broker, ledger_dsn, max_batch=max_batch, run=run_id)
            try:
                progress(f"writing {events} order events to {stack.input_topic} ...")
                await stack.create_topics()
                await stack.produce(events)
                progress("starting the coordinator, the bank, the events service and the pipeline ...")
                await asyncio.to_thread(stack.cluster.start, 60.0)
                pids = {name: node.pid for name, node in stack.nodes.items()}
                cpu_before = {name: process_cpu_seconds(pid) for name, pid in pids.items()}
                await stack.start_node("pipeline-1")
                pids["pipeline-1"] = stack.pipelines["pipeline-1"].pid
                through = await _drain(lambda: ledger_size(ledger_dsn), events, progress, "through the coordinator")
                cpu = {name: process_cpu_seconds(pid) - cpu_before.get(name, 0.0) for name, pid in pids.items()}
            finally:
                await asyncio.to_thread(stack.stop)
                await delete_topics(broker, [stack.input_topic, stack.output_topic, f"_twopc_stage.{stack.events}"])
            baseline = await _baseline(broker, baseline_dsn, events, max_batch, stack.run, progress)
    roles = {"coordinator": cpu.get("coordinator", 0.0), "pipeline": cpu.get("pipeline-1", 0.0)}
    roles["participants"] = sum(v for k, v in cpu.items() if k not in ("coordinator", "pipeline-1"))
    return {
        "workload": "pipeline",
        "run_id": run_id,
        "events": events,
        "max_batch": max_batch,
        "partitions": stack.partitions,
        "throughput_eps": through["rate"],
        "seconds": through["seconds"],
        "baseline": "the same consumer, the same ledger rows and output messages, without a coordinator "
        "(at least once: offsets committed after the writes)",
        "baseline_eps": baseline["rate"],
        "baseline_seconds": baseline["seconds"],
        "ratio": through["rate"] / baseline["rate"] if baseline["rate"] else 0.0,
        # CPU from the pipeline's start until the backlog was drained (its group join included).
        "cpu_ms_per_event": {role: 1000 * used / events for role, used in roles.items()},
        "progress": {"coordinator": through["curve"], "baseline": baseline["curve"]},
        "machine": machine(),
    }


async def _drain(count: Callable[[], Awaitable[int]], events: int, progress: Progress, label: str) -> dict[str, Any]:
    """Poll ``count`` until it reaches ``events``; the rate from the first event to the last."""
    started = time.monotonic()
    first: tuple[float, int] | None = None
    curve: list[list[float]] = []
    last_said = 0.0
    while True:
        done = await count()
        now = time.monotonic()
        if done > 0 and first is None:
            first = (now, done)
        if first is not None:
            curve.append([round(now - first[0], 3), done])
        if now - last_said >= 1.0:
            last_said = now
            progress(f"{label}: {done}/{events} events booked")
        if done >= events:
            break
        if now - started > 600:
            raise TimeoutError(f"{label}: only {done} of {events} events booked after 600s")
        await asyncio.sleep(_POLL)
    assert first is not None
    seconds = max(now - first[0], 1e-6)
    return {
        "rate": (events - first[1]) / seconds if events > first[1] else events / seconds,
        "seconds": seconds,
        "curve": curve,
    }


async def _baseline(
    bootstrap: str, dsn: str, events: int, max_batch: int, run: str, progress: Progress
) -> dict[str, Any]:
    source, output = f"orders-baseline-{run}", f"order-accepted-baseline-{run}"
    await create_topic(bootstrap, source, 3)
    await create_topic(bootstrap, output, 3)
    try:
        await publish(bootstrap, source, [order_event(n, run) for n in range(events)])
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute(LEDGER_SCHEMA)
        progress(f"baseline: the same consumer without a coordinator, {events} events")
        consumer = _BaselineConsumer(bootstrap, dsn, source, output, max_batch, f"baseline-{run}")
        task = asyncio.create_task(consumer.run())
        try:
            return await _drain(lambda: ledger_size(dsn), events, progress, "baseline")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await consumer.close()
    finally:
        await delete_topics(bootstrap, [source, output])


class _BaselineConsumer:
    def __init__(self, bootstrap: str, dsn: str, source: str, output: str, max_batch: int, group: str) -> None:
        self.bootstrap, self.dsn, self.source, self.output = bootstrap, dsn, source, output
        self.max_batch, self.group = max_batch, group
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None

    async def run(self) -> None:
        self.consumer = AIOKafkaConsumer(
            self.source,
            bootstrap_servers=self.bootstrap,
            group_id=self.group,
            isolation_level="read_committed",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, enable_idempotence=True, linger_ms=0)
        await self.consumer.start()
        await self.producer.start()
        # A connection per partition, as the pipeline's partitions run side by side.
        async with AsyncConnectionPool(self.dsn, min_size=3, max_size=8, open=False) as pool:
            while True:
                fetched = await self.consumer.getmany(timeout_ms=200, max_records=self.max_batch)
                await asyncio.gather(*(self._batch(pool, records) for records in fetched.values()))
                if fetched:
                    await self.consumer.commit()

    async def _batch(self, pool: AsyncConnectionPool, records: list[Any]) -> None:
        assert self.producer is not None
        rows, sent = [], []
        for r in records:
            entry, event_id = order_of(SourceRecord(r.topic, r.partition, r.offset, r.key, r.value, (), r.timestamp))
            if entry is not None:
                rows.append((entry["event_id"], "baseline", entry["account"], entry["amount"]))
            value = orjson.dumps({"id": event_id, "accepted": entry is not None})
            sent.append(await self.producer.send(self.output, value, event_id.encode()))
        async with pool.connection() as conn, conn.transaction(), conn.cursor() as cursor:
            await cursor.executemany(
                "INSERT INTO ledger (event_id, gtid, account, amount) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (event_id) DO UPDATE SET deliveries = ledger.deliveries + 1",
                rows,
            )
        await asyncio.gather(*sent)

    async def close(self) -> None:
        for client in (self.consumer, self.producer):
            if client is not None:
                await client.stop()


def print_pipeline(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"pipeline: {report['events']} events, batches of {report['max_batch']}")
    for column in ("run", "events/s", "seconds"):
        table.add_column(column)
    table.add_row(
        "through the coordinator (exactly once)", f"{report['throughput_eps']:.0f}", f"{report['seconds']:.2f}"
    )
    table.add_row("baseline (at least once)", f"{report['baseline_eps']:.0f}", f"{report['baseline_seconds']:.2f}")
    console = Console()
    console.print(table)
    cpu = ", ".join(f"{role} {ms:.2f}" for role, ms in report["cpu_ms_per_event"].items())
    console.print(f"ratio to the baseline: {report['ratio']:.2f}; CPU ms per event: {cpu}")


def plot_pipeline(report: dict[str, Any], path: Path) -> None:
    """Events booked over time, both runs from their first booked event."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    for label, key, color in (
        ("through the coordinator (exactly once)", "coordinator", "tab:green"),
        ("baseline without a coordinator (at least once)", "baseline", "tab:grey"),
    ):
        curve = report["progress"][key]
        ax.plot([p[0] for p in curve], [p[1] for p in curve], label=label, color=color)
    ax.set_xlabel("seconds since the first event booked")
    ax.set_ylabel("events booked")
    ax.set_title(
        f"pipeline: {report['events']} events, batches of {report['max_batch']}: "
        f"{report['throughput_eps']:.0f}/s vs {report['baseline_eps']:.0f}/s (ratio {report['ratio']:.2f})"
    )
    ax.legend(loc="lower right")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
