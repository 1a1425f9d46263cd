"""``twopc bench``: throughput and latency of the coordinator, beside the bare cost."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["LogName", "WorkloadName", "bench"]


class WorkloadName(StrEnum):
    """As ``tools.bench.WORKLOADS``, named here so that --help does not import the benchmark."""

    mock = "mock"
    postgres = "postgres"
    kafka = "kafka"
    mixed = "mixed"
    pipeline = "pipeline"


class LogName(StrEnum):
    """As ``tools.bench.LOGS``."""

    sqlite = "sqlite"
    postgres = "postgres"


#: The most replicas one run starts (each is a process of its own).
_MAX_REPLICAS = 16

_WORKLOAD_HELP = (
    "mock: N mock queues (--participants), an item on each. "
    "postgres: a transfer between two bank services, each on a new database of the PostgreSQL server. "
    "kafka: a message through the events service (Kafka) and an item on a mock queue. "
    "mixed: a bank transfer, a Kafka message and a queue item in one transaction. "
    "pipeline: events per second through `twopc pipeline serve` (read, book in the ledger, publish, exactly once) "
    "draining a backlog (--events, --max-batch), beside the same consumer without a coordinator."
)


def bench(
    workload: Annotated[WorkloadName, typer.Option(help=_WORKLOAD_HELP)] = WorkloadName.mock,
    participants: Annotated[
        int | None, typer.Option(min=1, max=16, help="mock queues in each transaction (mock workload only; default 2)")
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, max=4096, help="concurrent clients")] = 64,
    duration: Annotated[float, typer.Option(min=0.5, help="seconds measured")] = 10.0,
    warmup: Annotated[float, typer.Option(min=0, help="seconds before measuring")] = 2.0,
    sweep: Annotated[str, typer.Option(help="other concurrencies to measure, for the plot")] = "1,8,32",
    output: Annotated[Path | None, typer.Option(help="write the report as JSON here (and a PNG beside it)")] = None,
    plot: Annotated[Path | None, typer.Option(help="write the plot here (default: beside --output)")] = None,
    log: Annotated[
        str,
        typer.Option(
            help="the coordinators' decision log: sqlite or postgres (a database made for the run), or several "
            "comma-separated (sqlite,postgres) to measure each in turn in this run and print their ratio",
        ),
    ] = "sqlite",
    replicas: Annotated[
        str,
        typer.Option(
            help="coordinator replicas over the shared log (more than one needs --log postgres); several "
            "comma-separated (1,2) to measure each in turn in this run",
        ),
    ] = "1",
    metrics: Annotated[
        str,
        typer.Option(
            help="observe the latency histograms (on) or not (off), or on,off to measure both in turn in this "
            "run and print their ratio: what the metrics cost",
        ),
    ] = "on",
    postgres_dsn: Annotated[
        str | None,
        typer.Option(
            help="PostgreSQL server for postgres and mixed and for --log postgres, its role allowed to create "
            "databases "
            "(default: the one `twopc dev up postgres` runs)",
            envvar="TWOPC_BENCH_POSTGRES_DSN",
        ),
    ] = None,
    kafka_bootstrap: Annotated[
        str | None,
        typer.Option(
            help="Kafka broker for kafka, mixed and pipeline (default: the one `twopc dev up kafka` runs)",
            envvar="TWOPC_BENCH_KAFKA_BOOTSTRAP",
        ),
    ] = None,
    events: Annotated[int, typer.Option(min=1, help="pipeline: the backlog of input events each run drains")] = 3000,
    max_batch: Annotated[int, typer.Option(min=1, help="pipeline: events per batch (one global transaction)")] = 100,
    compare_ref: Annotated[
        str | None,
        typer.Option(
            metavar="GIT_REF",
            help="also measure this git ref's coordinator and participant services (a branch, a tag, HEAD~1, a sha; "
            "exported, in a temporary venv with its requirements.lock) in this run, and print this checkout's "
            "figures over its",
        ),
    ] = None,
) -> None:
    """Measure committed transactions per second and latency percentiles, and the baseline:
    the same participant work without a coordinator.

    Databases and topics are made for the run and removed after it.
    """
    from tools.bench import BenchSetupError, run_bench

    if participants is not None and workload is not WorkloadName.mock:
        raise typer.BadParameter(f"the {workload} workload has fixed participants", param_hint="--participants")
    try:
        points = [int(p) for p in sweep.split(",") if p.strip()]
    except ValueError:
        raise typer.BadParameter("a comma-separated list of whole numbers", param_hint="--sweep") from None
    logs = _logs(log)
    counts = _replica_counts(replicas)
    if max(counts) > 1 and logs != [LogName.postgres]:
        raise typer.BadParameter(
            "several replicas share one decision log: use --log postgres (SQLite is one replica's own file)",
            param_hint="--replicas",
        )
    switches = _metrics_switches(metrics)
    if compare_ref is not None:
        _check_compare_ref(workload, len(logs) * len(counts) * len(switches))
    try:
        run_bench(
            workload.value,
            participants,
            concurrency,
            duration,
            warmup,
            points,
            output,
            plot,
            progress=lambda line: typer.echo(line, err=True),
            postgres_dsn=postgres_dsn,
            kafka_bootstrap=kafka_bootstrap,
            logs=[name.value for name in logs],
            replicas=counts,
            metrics=switches,
            events=events,
            max_batch=max_batch,
            compare_ref=compare_ref,
        )
    except BenchSetupError as exc:
        typer.echo(f"twopc bench: {exc}", err=True)
        raise typer.Exit(2) from None


def _logs(option: str) -> list[LogName]:
    names = [name.strip() for name in option.split(",") if name.strip()]
    try:
        logs = [LogName(name) for name in names]
    except ValueError:
        raise typer.BadParameter(f"{option!r}: sqlite, postgres, or both comma-separated", param_hint="--log") from None
    if not logs or len(set(logs)) != len(logs):
        raise typer.BadParameter(f"{option!r}: each log once, at least one", param_hint="--log")
    return logs


def _check_compare_ref(workload: WorkloadName, setups: int) -> None:
    if workload is WorkloadName.pipeline:
        raise typer.BadParameter("the pipeline workload cannot compare versions", param_hint="--compare-ref")
    if setups > 1:
        raise typer.BadParameter(
            "it compares one set of coordinators: give one --log, one --replicas and one --metrics with it",
            param_hint="--compare-ref",
        )


def _metrics_switches(option: str) -> list[bool]:
    names = [name.strip() for name in option.split(",") if name.strip()]
    if not names or len(set(names)) != len(names) or not set(names) <= {"on", "off"}:
        raise typer.BadParameter(f"{option!r}: on, off, or on,off", param_hint="--metrics")
    return [name == "on" for name in names]


def _replica_counts(option: str) -> list[int]:
    try:
        counts = [int(count) for count in option.split(",") if count.strip()]
    except ValueError:
        counts = []
    if not counts or any(not 1 <= count <= _MAX_REPLICAS for count in counts) or len(set(counts)) != len(counts):
        raise typer.BadParameter(
            f"{option!r}: a number of replicas from 1 to {_MAX_REPLICAS}, or several comma-separated, each once",
            param_hint="--replicas",
        )
    return counts
