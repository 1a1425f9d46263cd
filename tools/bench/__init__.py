"""``twopc bench``: throughput and latency percentiles, beside the bare cost of the same work."""

from __future__ import annotations

import asyncio
import gc
import json
import re
import tempfile
from collections.abc import Coroutine, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from tools.bench._code import THIS_CHECKOUT, ServiceCode, build_ref
from tools.bench._compare import comparison, print_comparison, print_ref_comparison, ref_comparison
from tools.bench._coordinators import LOGS, Coordinators, summed
from tools.bench._kafka import KafkaWorkload
from tools.bench._load import LoadResult, run_load
from tools.bench._measure import Measured, interleaved
from tools.bench._mixed import MixedWorkload
from tools.bench._mock import MockWorkload
from tools.bench._pipeline import bench_pipeline, plot_pipeline, print_pipeline
from tools.bench._postgres import PostgresWorkload
from tools.bench._report import (
    Series,
    busy_percent,
    machine,
    machine_cpu_ticks,
    plot,
    print_report,
    process_peak_rss_mb,
)
from tools.bench._resources import BenchSetupError
from tools.bench._workload import Progress, Workload
from twopc_core.runtime import new_event_loop, tune_garbage_collector

__all__ = ["LOGS", "WORKLOADS", "BenchSetupError", "Coordinators", "Workload", "run_bench"]

WORKLOADS = ("mock", "postgres", "kafka", "mixed", "pipeline")

#: Durable decisions, loopback timeouts a loaded machine can meet.
_COORDINATOR_TOML = """
[transactions]
prepare_timeout_ms = 10000
commit_wait_ms = 10000
"""
_DEFAULT_MOCK_PARTICIPANTS = 2


T = TypeVar("T")


def _workload(
    name: str,
    directory: Path,
    participants: int | None,
    postgres_dsn: str | None,
    kafka_bootstrap: str | None,
    coordinators: Coordinators,
) -> Workload:
    if name == "mock":
        count = participants or _DEFAULT_MOCK_PARTICIPANTS
        return MockWorkload(directory, count, _COORDINATOR_TOML, coordinators)
    if name not in WORKLOADS or name == "pipeline":
        raise ValueError(f"no workload {name!r}: choose one of {', '.join(WORKLOADS)}")
    if participants is not None:
        raise ValueError(f"the {name} workload has fixed participants; participants applies to the mock workload")
    if name == "postgres":
        return PostgresWorkload(directory, _COORDINATOR_TOML, postgres_dsn, coordinators)
    if name == "kafka":
        return KafkaWorkload(directory, _COORDINATOR_TOML, kafka_bootstrap, coordinators)
    return MixedWorkload(directory, _COORDINATOR_TOML, postgres_dsn, kafka_bootstrap, coordinators)


@dataclass
class _Baseline:
    """The coordinator-free run, measured once and shared by every log's report."""

    result: LoadResult
    machine_busy_percent: float


def run_bench(
    workload: str = "mock",
    participants: int | None = None,
    concurrency: int = 64,
    duration: float = 10.0,
    warmup: float = 2.0,
    sweep: Sequence[int] = (1, 8, 32),
    output: Path | None = None,
    plot_path: Path | None = None,
    directory: Path | None = None,
    progress: Progress = print,
    *,
    postgres_dsn: str | None = None,
    kafka_bootstrap: str | None = None,
    logs: Sequence[str] = ("sqlite",),
    replicas: int | Sequence[int] = 1,
    metrics: Sequence[bool] = (True,),
    events: int = 3000,
    max_batch: int = 100,
    compare_ref: str | None = None,
    repository: Path | None = None,
) -> dict[str, Any]:
    """Run one workload through the coordinator and as its baseline; print and return the report.

    ``participants`` is for the mock workload (the others have fixed participants);
    ``postgres_dsn`` and ``kafka_bootstrap`` default to the servers ``twopc dev up`` runs.
    ``logs`` are the decision logs to measure in this run, each on a cluster of its own,
    in alternating slices (the baseline measured once); ``replicas`` coordinators share a
    postgres log, and clients are spread over them (several counts: each is measured,
    for every log). ``metrics``: measure with the latency histograms observed (True)
    and/or not (False), each as a set of its own. With one set of coordinators the report is its own; with several it
    holds each one's report under ``runs`` and their throughput ratios to the first.
    ``compare_ref``: a git ref whose coordinator and participant services are measured
    beside this checkout's (one set of coordinators only), with their ratios, head/ref;
    it is looked up in ``repository`` (default: the git checkout this code runs from).

    The pipeline workload drains a backlog of ``events`` in batches of ``max_batch`` (the
    other options do not apply to it); see :mod:`tools.bench._pipeline`.
    """
    if workload == "pipeline":
        if compare_ref is not None:
            raise ValueError("compare_ref applies to the transaction workloads, not to pipeline")
        return _bench_pipeline(events, max_batch, output, plot_path, directory, progress, postgres_dsn, kafka_bootstrap)
    counts = [replicas] if isinstance(replicas, int) else list(replicas)
    setups = [Coordinators(log, count, postgres_dsn, on) for log in logs for count in counts for on in metrics]
    if not setups:
        raise ValueError("at least one log to measure")
    if compare_ref is not None and len(setups) > 1:
        raise ValueError("compare_ref compares one set of coordinators: one log, one number of replicas, one metrics")
    ref_code: ServiceCode | None = None
    # The ref's tree and venv live in the run's temporary directory, removed with it.
    with tempfile.TemporaryDirectory(prefix="twopc-bench-") as tmp:
        if compare_ref is not None:
            ref_code = build_ref(compare_ref, Path(tmp) / "ref", progress, repository)
            # This checkout first: the baseline (measured once) uses its participants.
            setups = [replace(setups[0], code=THIS_CHECKOUT), replace(setups[0], code=ref_code)]
        root = directory or Path(tmp)
        loads = [
            _workload(
                workload,
                root if len(setups) == 1 else root / _directory_name(setup.label),
                participants,
                postgres_dsn,
                kafka_bootstrap,
                setup,
            )
            for setup in setups
        ]
        runs = _event_loop_run(_bench_all(loads, setups, concurrency, duration, warmup, sweep, progress))
    reports = [report for report, _ in runs]
    if ref_code is not None:
        report = ref_comparison(reports[0], reports[1], _ref_description(ref_code))
    else:
        report = reports[0] if len(runs) == 1 else comparison(reports)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report, indent=2) + "\n")
    if plot_path is None and output is not None:
        plot_path = output.with_suffix(".png")
    if plot_path is not None:
        plot(
            [
                Series(setup.label, run_report, latencies)
                for setup, (run_report, latencies) in zip(setups, runs, strict=True)
            ],
            plot_path,
        )
        report["plot"] = str(plot_path)
    for run_report in reports:
        print_report(run_report)
    if ref_code is not None:
        print_ref_comparison(report)
    elif len(reports) > 1:
        print_comparison(report)
    return report


def _directory_name(label: str) -> str:
    """A label as a directory name: ``HEAD~1 (1a2b3c4), sqlite`` -> ``HEAD-1-1a2b3c4-sqlite``."""
    return re.sub(r"[^A-Za-z0-9._]+", "-", label).strip("-")


def _ref_description(code: ServiceCode) -> dict[str, str]:
    assert code.commit is not None
    return {"ref": code.commit.ref, "sha": code.commit.sha, "label": code.label, "packages": code.packages}


def _bench_pipeline(
    events: int,
    max_batch: int,
    output: Path | None,
    plot_path: Path | None,
    directory: Path | None,
    progress: Progress,
    postgres_dsn: str | None,
    kafka_bootstrap: str | None,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="twopc-bench-") as tmp:
        report = _event_loop_run(
            bench_pipeline(
                directory or Path(tmp),
                events,
                max_batch,
                progress,
                postgres_dsn=postgres_dsn,
                bootstrap=kafka_bootstrap,
            )
        )
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report, indent=2) + "\n")
    if plot_path is None and output is not None:
        plot_path = output.with_suffix(".png")
    if plot_path is not None:
        plot_pipeline(report, plot_path)
        report["plot"] = str(plot_path)
    print_pipeline(report)
    return report


async def _bench_all(
    loads: Sequence[Workload],
    setups: Sequence[Coordinators],
    concurrency: int,
    duration: float,
    warmup: float,
    sweep: Sequence[int],
    progress: Progress,
) -> list[tuple[dict[str, Any], dict[str, list[float]]]]:
    async with AsyncExitStack() as running:
        # Every cluster runs for the whole measurement, so that their slices can alternate.
        for load in loads:
            running.push_async_callback(_stop, load, progress)
            await load.start(progress)
            running.push_async_callback(load.close)
            await load.open(max([concurrency, *sweep]))
        labels = [setup.label for setup in setups]
        who = "; ".join(
            f"{label} log ({', '.join(load.replica_names)})" for label, load in zip(labels, loads, strict=True)
        )
        progress(f"through the coordinators, {who}: {concurrency} clients, {warmup:g}s warm-up + {duration:g}s each")
        mains = await interleaved(loads, labels, concurrency, duration, warmup, progress)
        baseline = await _measure_baseline(loads[0], concurrency, duration, warmup, progress)
        runs = []
        for load, setup, main in zip(loads, setups, mains, strict=True):
            points = [_point(concurrency, main.result)]
            for clients in sorted(set(sweep) - {concurrency}):
                progress(f"sweep, {setup.label} log: {clients} clients")
                point = await run_load(load.transaction, clients, max(2.0, duration / 3), 1.0, progress)
                points.append(_point(clients, point))
            report = _report(load, setup, main, baseline, points, concurrency, warmup)
            runs.append((report, {"coordinator": main.result.latencies_ms, "baseline": baseline.result.latencies_ms}))
        return runs


async def _stop(load: Workload, progress: Progress) -> None:
    progress("stopping the processes and removing what this run made ...")
    await load.stop()


def _report(
    load: Workload,
    setup: Coordinators,
    measured: Measured,
    baseline: _Baseline,
    points: list[dict[str, Any]],
    concurrency: int,
    warmup: float,
) -> dict[str, Any]:
    main, base, cpu_used = measured.result, baseline.result, measured.cpu_used
    total = summed(measured.by_replica)
    calls, exchanges = total.get("participant_calls", 0.0), total.get("participant_exchanges", 0.0)
    commits, decisions = total.get("log_commits", 0.0), total.get("decisions_logged", 0.0)
    names = load.participant_names
    return {
        "workload": load.name,
        "run_id": load.run_id,
        **({} if setup.code is None else {"code": setup.code.label}),
        "log": setup.log,
        "replicas": setup.replicas,
        "metrics": setup.metrics,
        "replica_names": load.replica_names,
        "participants": len(names),
        "participant_names": names,
        "concurrency": concurrency,
        "duration_s": main.seconds,
        "warmup_s": warmup,
        "throughput_tps": main.throughput,
        "latency_ms": main.latency(),
        "committed": main.committed,
        "aborted": main.aborted,
        "errors": main.errors,
        "error_samples": main.error_samples + base.error_samples,
        # CPU over the measured run, in percent of one core and per committed transaction.
        **{f"{who}_cpu_percent": 100 * used / main.seconds for who, used in cpu_used.items()},
        "cpu_ms_per_transaction": {
            who: 1000 * used / main.committed if main.committed else 0.0 for who, used in cpu_used.items()
        },
        # Peak resident memory of each role's processes (summed) over the whole run; not
        # of the log's server backends, whose resident memory is mostly shared buffers.
        "peak_rss_mb": {
            role: sum(process_peak_rss_mb(pid) for pid in pids)
            for role, pids in load.pids().items()
            if role != "log_database"
        },
        # The whole machine, every process on it: below 100, the run was not short of CPU.
        "machine_busy_percent": busy_percent((0, 0), measured.machine_ticks),
        # Every replica's own counters over the measured run, summed: decisions it forced
        # to the log, and the log transactions (batches) it committed.
        "decisions_logged": decisions,
        "log_commits": commits,
        "decisions_per_log_commit": decisions / commits if commits else 0.0,
        "by_replica": {replica: _replica_figures(counters) for replica, counters in measured.by_replica.items()},
        "calls_per_exchange": calls / exchanges if exchanges else 0.0,
        "baseline": load.baseline_description,
        "baseline_tps": base.throughput,
        "baseline_latency_ms": base.latency(),
        "baseline_committed": base.committed,
        "baseline_aborted": base.aborted,
        "baseline_errors": base.errors,
        "baseline_machine_busy_percent": baseline.machine_busy_percent,
        "overhead_ratio": main.throughput / base.throughput if base.throughput else 0.0,
        "sweep": sorted(points, key=lambda p: p["concurrency"]),
        "machine": machine(),
    }


async def _measure_baseline(
    load: Workload, concurrency: int, duration: float, warmup: float, progress: Progress
) -> _Baseline:
    progress(f"baseline, the same work without a coordinator: {concurrency} clients")
    ticks: list[tuple[int, int]] = []
    result = await run_load(
        load.baseline,
        concurrency,
        duration,
        warmup,
        progress,
        at_measure_start=lambda: ticks.append(machine_cpu_ticks()),
    )
    return _Baseline(result, busy_percent(ticks[0], machine_cpu_ticks()) if ticks else 0.0)


def _replica_figures(counters: dict[str, float]) -> dict[str, float]:
    decisions, commits = counters.get("decisions_logged", 0.0), counters.get("log_commits", 0.0)
    return {
        "decisions_logged": decisions,
        "log_commits": commits,
        "decisions_per_log_commit": decisions / commits if commits else 0.0,
    }


def _point(concurrency: int, result: LoadResult) -> dict[str, Any]:
    return {"concurrency": concurrency, "throughput_tps": result.throughput, **result.latency()}


def _event_loop_run(coro: Coroutine[Any, Any, T]) -> T:
    # The load generator allocates like a service does: the same loop, the same collector;
    # and leaves the collector as it found it, for a caller that goes on (a test, say).
    thresholds, frozen = gc.get_threshold(), gc.get_freeze_count()
    tune_garbage_collector()
    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            return runner.run(coro)
    finally:
        if not frozen:
            gc.unfreeze()
        gc.set_threshold(*thresholds)
