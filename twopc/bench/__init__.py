"""``twopc bench``: throughput and latency percentiles, beside the bare cost of the same work."""

from __future__ import annotations

import asyncio
import json
import resource
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from twopc.bench._load import LoadResult, run_load
from twopc.bench._mock import MockWorkload
from twopc.bench._report import machine, plot, print_report, process_cpu_seconds

__all__ = ["run_bench"]

#: Durable decisions, loopback timeouts a loaded machine can meet.
_COORDINATOR_TOML = """
[transactions]
prepare_timeout_ms = 10000
commit_wait_ms = 10000
"""


def _workload(name: str, directory: Path, participants: int) -> MockWorkload:
    if name == "mock":
        return MockWorkload(directory, participants, coordinator_toml=_COORDINATOR_TOML)
    raise ValueError(f"workload {name!r} is not available yet")


def run_bench(
    workload: str = "mock",
    participants: int = 2,
    concurrency: int = 64,
    duration: float = 10.0,
    warmup: float = 2.0,
    sweep: Sequence[int] = (1, 8, 32),
    output: Path | None = None,
    plot_path: Path | None = None,
    directory: Path | None = None,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="twopc-bench-") as tmp:
        where = directory or Path(tmp)
        load = _workload(workload, where, participants)
        progress(f"starting the coordinator and {participants} {workload} participants in {where} ...")
        load.start()
        try:
            report, latencies = _run(load, participants, concurrency, duration, warmup, sweep, progress)
        finally:
            load.stop()
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report, indent=2) + "\n")
    if plot_path is None and output is not None:
        plot_path = output.with_suffix(".png")
    if plot_path is not None:
        plot(report, latencies, plot_path)
        report["plot"] = str(plot_path)
    print_report(report)
    return report


def _run(
    load: MockWorkload,
    participants: int,
    concurrency: int,
    duration: float,
    warmup: float,
    sweep: Sequence[int],
    progress: Callable[[str], None],
) -> tuple[dict[str, Any], dict[str, list[float]]]:
    async def measure() -> tuple[dict[str, Any], dict[str, list[float]]]:
        await load.open(max([concurrency, *sweep]))
        try:
            progress(f"through the coordinator: {concurrency} clients, {warmup:.0f}s warm-up + {duration:.0f}s")
            before, cpu_before = await load.metrics(), _cpu(load)
            main = await run_load(load.transaction, concurrency, duration, warmup, progress)
            after, cpu_after = await load.metrics(), _cpu(load)
            progress(f"baseline, the same work without a coordinator: {concurrency} clients")
            base = await run_load(load.baseline, concurrency, duration, warmup, progress)
            points: list[dict[str, Any]] = []
            for clients in sorted(set(sweep)):
                progress(f"sweep: {clients} clients")
                point = await run_load(load.transaction, clients, max(2.0, duration / 3), 1.0, progress)
                points.append(_point(clients, point))
            points.append(_point(concurrency, main))
        finally:
            await load.close()
        calls = after.get("participant_calls", 0) - before.get("participant_calls", 0)
        exchanges = after.get("participant_exchanges", 0) - before.get("participant_exchanges", 0)
        commits = after.get("log_commits", 0) - before.get("log_commits", 0)
        decisions = after.get("decisions_logged", 0) - before.get("decisions_logged", 0)
        report = {
            "workload": load.name,
            "participants": participants,
            "concurrency": concurrency,
            "duration_s": main.seconds,
            "warmup_s": warmup,
            "throughput_tps": main.throughput,
            "latency_ms": main.latency(),
            "committed": main.committed,
            "aborted": main.aborted,
            "errors": main.errors,
            "error_samples": main.error_samples + base.error_samples,
            # CPU over the measured run and its warm-up, in percent of one core.
            **{
                f"{who}_cpu_percent": 100 * (cpu_after[who] - cpu_before[who]) / (main.seconds + warmup)
                for who in cpu_after
            },
            "decisions_per_log_commit": decisions / commits if commits else 0.0,
            "calls_per_exchange": calls / exchanges if exchanges else 0.0,
            "baseline_tps": base.throughput,
            "baseline_latency_ms": base.latency(),
            "overhead_ratio": main.throughput / base.throughput if base.throughput else 0.0,
            "sweep": sorted(points, key=lambda p: p["concurrency"]),
            "machine": machine(),
        }
        return report, {"coordinator": main.latencies_ms, "baseline": base.latencies_ms}

    return _event_loop_run(measure())


def _cpu(load: MockWorkload) -> dict[str, float]:
    """CPU seconds used so far by the coordinator, the participants and this load generator."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "coordinator": process_cpu_seconds(load.coordinator_pid),
        "participants": sum(process_cpu_seconds(pid) for pid in load.participant_pids),
        "load_generator": usage.ru_utime + usage.ru_stime,
    }


def _point(concurrency: int, result: LoadResult) -> dict[str, Any]:
    return {"concurrency": concurrency, "throughput_tps": result.throughput, **result.latency()}


def _event_loop_run(coro: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)
