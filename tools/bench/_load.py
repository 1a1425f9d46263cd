"""A closed-loop load generator: C workers, each running one operation after another.

Latencies are recorded after a warm-up, so connection set-up and first-call costs do
not skew the percentiles. Progress is reported once a second.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

__all__ = ["LoadResult", "percentile", "run_load"]

Operation = Callable[[int, int], Awaitable[bool]]
"""``operation(worker, seq)`` runs one transaction; True when it committed."""


@dataclass
class LoadResult:
    seconds: float
    committed: int
    aborted: int
    errors: int
    latencies_ms: list[float] = field(repr=False)
    error_samples: list[str] = field(default_factory=list, repr=False)

    @property
    def throughput(self) -> float:
        return self.committed / self.seconds if self.seconds else 0.0

    def latency(self) -> dict[str, float]:
        values = sorted(self.latencies_ms)
        return {
            "p50": percentile(values, 50),
            "p95": percentile(values, 95),
            "p99": percentile(values, 99),
            "max": values[-1] if values else 0.0,
        }


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return 0.0
    rank = math.ceil(pct / 100 * len(sorted_values))  # 1-based
    return sorted_values[max(0, min(len(sorted_values), rank) - 1)]


async def run_load(
    operation: Operation,
    concurrency: int,
    duration: float,
    warmup: float,
    progress: Callable[[str], None] | None = None,
    at_measure_start: Callable[[], None] | None = None,
) -> LoadResult:
    """Run ``operation`` from ``concurrency`` workers; ``at_measure_start`` is called
    when the warm-up ends (to take readings that should cover the measured part only)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    measure_from = start + warmup
    stop_at = measure_from + duration
    if at_measure_start is not None:
        loop.call_at(measure_from, at_measure_start)
    latencies: list[float] = []
    counts = {"committed": 0, "aborted": 0, "errors": 0}
    samples: list[str] = []

    async def worker(n: int) -> None:
        seq = 0
        while (now := loop.time()) < stop_at:
            seq += 1
            began = time.perf_counter()
            try:
                outcome = "committed" if await operation(n, seq) else "aborted"
            except Exception as exc:  # a benchmark counts errors, it does not stop on them
                outcome = "errors"
                if len(samples) < 5:
                    samples.append(f"{type(exc).__name__}: {exc}")
            if now >= measure_from:
                counts[outcome] += 1
                if outcome == "committed":
                    latencies.append((time.perf_counter() - began) * 1000)

    async def report() -> None:
        last = 0
        while True:
            await asyncio.sleep(1)
            now = loop.time()
            phase = "warm-up" if now < measure_from else f"{min(now, stop_at) - measure_from:4.0f}s"
            done = counts["committed"]
            if progress is not None:
                progress(
                    f"{phase:>8}  committed {done:7d} ({done - last:5d}/s)  "
                    f"aborted {counts['aborted']}  errors {counts['errors']}"
                )
            last = done

    reporter = asyncio.create_task(report())
    try:
        await asyncio.gather(*(worker(n) for n in range(concurrency)))
    finally:
        reporter.cancel()
    elapsed = min(loop.time(), stop_at) - measure_from
    return LoadResult(
        seconds=max(elapsed, 1e-9),
        committed=counts["committed"],
        aborted=counts["aborted"],
        errors=counts["errors"],
        latencies_ms=latencies,
        error_samples=samples,
    )
