"""Run one scenario from start to verdict."""

from __future__ import annotations

import asyncio
import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from chaos.checkers import check, settle
from chaos.nemesis import Nemesis
from chaos.report import plot_timeline, print_report, save_report
from chaos.scenario import Scenario
from chaos.topology import Topology
from chaos.workload import Workload

__all__ = ["RunResult", "run_scenario"]


@dataclass
class RunResult:
    report: dict[str, Any]

    @property
    def ok(self) -> bool:
        return not self.report["violations"]


def run_scenario(
    scenario: Scenario,
    seed: int | None = None,
    duration: float | None = None,
    report_path: Path | None = None,
    directory: Path | None = None,
    progress: Callable[[str], None] = print,
    show: bool = True,
) -> RunResult:
    scenario = scenario.model_copy(
        update={"seed": scenario.seed if seed is None else seed, "duration_s": duration or scenario.duration_s}
    )
    with tempfile.TemporaryDirectory(prefix=f"twopc-chaos-{scenario.name}-") as tmp:
        where = directory or Path(tmp)
        report = asyncio.run(_run(scenario, where, progress))
        if report_path is not None:
            save_report(report, report_path, plot_timeline)
        if report["violations"] and directory is None:
            report["logs"] = "kept only with --dir"
    if show:
        print_report(report)
    return RunResult(report)


async def _run(scenario: Scenario, directory: Path, progress: Callable[[str], None]) -> dict[str, Any]:
    topology = Topology(scenario, directory)
    rng = random.Random(scenario.seed)
    coordinators = "the coordinator" if len(topology.replicas) == 1 else f"replicas {', '.join(topology.replicas)}"
    progress(f"{scenario.name}: starting {coordinators} and {', '.join(topology.participants)} in {directory} ...")
    try:
        # Inside the try: a topology that fails half-way up is still taken down (processes,
        # databases), so a failed run leaves nothing behind.
        async with aiohttp.ClientSession() as http:
            await topology.start(http)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        spec = scenario.workload
        workload = Workload(topology, spec.clients, scenario.seed, spec.request_timeout_s, t0, spec.retry_for_s)
        nemeses = [
            Nemesis(spec, topology, random.Random(rng.random()), t0, scenario.duration_s) for spec in scenario.nemesis
        ]
        stop_faults, stop_load = asyncio.Event(), asyncio.Event()
        load = asyncio.create_task(workload.run(stop_load))
        strikes = [asyncio.create_task(n.run(stop_faults)) for n in nemeses]
        reporter = asyncio.create_task(_progress(workload, nemeses, t0, progress))
        await asyncio.sleep(scenario.duration_s)
        stop_faults.set()
        await asyncio.gather(*strikes)  # every struck node is healed when its strike returns
        stop_load.set()
        await load
        reporter.cancel()
        progress(f"faults stopped at {loop.time() - t0:.1f}s; waiting for the system to settle ...")
        async with aiohttp.ClientSession() as http:
            settled = await settle(topology, http, scenario.liveness_bound_s)
            await asyncio.gather(*(n.wait_recovered(timeout=5) for n in nemeses))
            result = await check(topology, http, workload.history, list(scenario.invariants))
    finally:
        await topology.stop()
    violations = list(result.violations)
    if settled.seconds is None and "liveness" in scenario.invariants:
        violations.append(
            f"liveness: still unfinished or in doubt {scenario.liveness_bound_s:g}s after the faults stopped: "
            + "; ".join(settled.waiting_for[:8])
        )
    faults = [f for n in nemeses for f in n.faults]
    if not faults:
        violations.append("no fault was injected: the scenario proved nothing")
    return {
        "scenario": scenario.name,
        "seed": scenario.seed,
        "duration_s": scenario.duration_s,
        "transactions": workload.counts(),
        "resolved_unknown": dict(result.resolved),
        "effects_checked": result.effects,
        "faults_injected": len(faults),
        "fault_misses": sum(n.misses for n in nemeses),
        "faults": [
            {
                "kind": f.kind,
                "target": f.target,
                "detail": f.detail,
                "started": round(f.started, 3),
                "healed": None if f.healed is None else round(f.healed, 3),
                "recovered": None if f.recovered is None else round(f.recovered, 3),
                "recovery_seconds": None if f.recovery_seconds is None else round(f.recovery_seconds, 3),
                "taken_over_by": f.taken_over_by,
                "takeover_seconds": None if f.takeover_seconds is None else round(f.takeover_seconds, 3),
            }
            for f in sorted(faults, key=lambda f: f.started)
        ],
        "recovery_seconds": [round(f.recovery_seconds, 3) for f in faults if f.recovery_seconds is not None],
        "takeover_seconds": [round(f.takeover_seconds, 3) for f in faults if f.takeover_seconds is not None],
        "replicas": len(topology.replicas),
        "log": scenario.cluster.log,
        # Attempts again with the same Idempotency-Key, each at the next replica.
        "retries": workload.retries,
        "unsafe_settings": scenario.unsafe_settings,
        "settle_seconds": None if settled.seconds is None else round(settled.seconds, 3),
        "violations": violations,
        "invariants": list(scenario.invariants),
        "timeline": _timeline(workload, scenario.duration_s),
    }


def _timeline(workload: Workload, duration: float) -> list[dict[str, float]]:
    end = max([duration, *(t.ended for t in workload.history)])
    buckets = [{"t": float(s), "committed": 0, "aborted": 0, "unknown": 0} for s in range(int(end) + 1)]
    for txn in workload.history:
        buckets[min(int(txn.ended), len(buckets) - 1)][txn.outcome] += 1
    return buckets


async def _progress(workload: Workload, nemeses: list[Nemesis], t0: float, progress: Callable[[str], None]) -> None:
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(1)
        counts = workload.counts()
        faults = [f for n in nemeses for f in n.faults]
        recovered = [f.recovery_seconds for f in faults if f.recovery_seconds is not None]
        last = f"; last: {faults[-1].kind} {faults[-1].target}" if faults else ""
        progress(
            f"{loop.time() - t0:5.0f}s  committed {counts['committed']:6d}  aborted {counts['aborted']:5d}  "
            f"unknown {counts['unknown']:4d}  faults {len(faults)}  recovered {len(recovered)}{last}"
        )
