"""One measured stretch of load through the coordinators, with the readings that go with
it (the replicas' counters, each role's CPU, the machine's ticks), and stretches added up.

Several logs in one run are measured in alternating slices (A B B A ...) rather than one
after the other: on a shared, noisy machine a slow minute then falls on both alike, and
their ratio holds.
"""

from __future__ import annotations

import resource
from collections.abc import Sequence
from dataclasses import dataclass

from tools.bench._coordinators import replica_deltas
from tools.bench._load import LoadResult, run_load
from tools.bench._report import machine_cpu_ticks, process_cpu_seconds
from tools.bench._workload import Progress, Workload

__all__ = ["Measured", "combined", "cpu_seconds", "interleaved", "measure"]

#: The warm-up of every slice after a log's first: connections are open already; the
#: closed loop only needs to fill up again.
_SLICE_WARMUP = 0.5
#: Seconds measured per slice when several logs alternate.
_SLICE_SECONDS = 2.0


@dataclass
class Measured:
    result: LoadResult
    #: Each replica's counters over the stretch (warm-up included: ratios of them hold).
    by_replica: dict[str, dict[str, float]]
    #: CPU seconds of each role, and of this load generator, over the measured part.
    cpu_used: dict[str, float]
    #: The whole machine's (busy, total) ticks over the measured part.
    machine_ticks: tuple[int, int]


async def measure(load: Workload, concurrency: int, duration: float, warmup: float, progress: Progress) -> Measured:
    before = await load.metrics()
    cpu_before: dict[str, float] = {}
    ticks_before: list[tuple[int, int]] = []

    def measure_starts() -> None:
        cpu_before.update(cpu_seconds(load))
        ticks_before.append(machine_cpu_ticks())

    result = await run_load(load.transaction, concurrency, duration, warmup, progress, at_measure_start=measure_starts)
    after, cpu_after, ticks_after = await load.metrics(), cpu_seconds(load), machine_cpu_ticks()
    start = ticks_before[0] if ticks_before else ticks_after
    return Measured(
        result,
        replica_deltas(before, after),
        {who: cpu_after[who] - cpu_before.get(who, cpu_after[who]) for who in cpu_after},
        (ticks_after[0] - start[0], ticks_after[1] - start[1]),
    )


async def interleaved(
    loads: Sequence[Workload],
    labels: Sequence[str],
    concurrency: int,
    duration: float,
    warmup: float,
    progress: Progress,
) -> list[Measured]:
    """``duration`` seconds of each load, in alternating slices of about two seconds (one
    slice, as :func:`measure`, for a single load); ``labels`` name them in the progress."""
    if len(loads) == 1:
        return [await measure(loads[0], concurrency, duration, warmup, progress)]
    slices = max(1, round(duration / _SLICE_SECONDS))
    parts: list[list[Measured]] = [[] for _ in loads]
    for number in range(slices):
        order = list(range(len(loads)))
        if number % 2:
            order.reverse()  # A B, B A, A B ...: a drift of the machine's speed falls on both alike
        for index in order:
            first = not parts[index]
            progress(f"slice {number + 1}/{slices}: {labels[index]} log ({', '.join(loads[index].replica_names)})")
            parts[index].append(
                await measure(
                    loads[index],
                    concurrency,
                    duration / slices,
                    warmup if first else min(warmup, _SLICE_WARMUP),
                    progress,
                )
            )
    return [combined(measured) for measured in parts]


def combined(parts: Sequence[Measured]) -> Measured:
    """Several stretches of one load as one: counts, seconds, CPU and ticks added, latencies pooled."""
    result = LoadResult(
        seconds=sum(p.result.seconds for p in parts),
        committed=sum(p.result.committed for p in parts),
        aborted=sum(p.result.aborted for p in parts),
        errors=sum(p.result.errors for p in parts),
        latencies_ms=[ms for p in parts for ms in p.result.latencies_ms],
        error_samples=[sample for p in parts for sample in p.result.error_samples][:5],
    )
    by_replica: dict[str, dict[str, float]] = {}
    cpu_used: dict[str, float] = {}
    for part in parts:
        for replica, counters in part.by_replica.items():
            into = by_replica.setdefault(replica, {})
            for name, value in counters.items():
                into[name] = into.get(name, 0.0) + value
        for who, used in part.cpu_used.items():
            cpu_used[who] = cpu_used.get(who, 0.0) + used
    busy = sum(p.machine_ticks[0] for p in parts)
    total = sum(p.machine_ticks[1] for p in parts)
    return Measured(result, by_replica, cpu_used, (busy, total))


def cpu_seconds(load: Workload) -> dict[str, float]:
    """CPU seconds used so far by each role's processes and by this load generator."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    used = {role: sum(process_cpu_seconds(pid) for pid in pids) for role, pids in load.pids().items()}
    return {**used, "load_generator": usage.ru_utime + usage.ru_stime}
