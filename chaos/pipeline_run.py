"""Chaos for the pipeline: kill its processes, or make its group rebalance, while a
producer keeps writing input; then every input event must take effect exactly once.

A pipeline scenario is a TOML file in ``chaos/scenarios/pipeline``. The topology is
fixed (:class:`~chaos.pipeline_stack.PipelineStack`: a coordinator, the bank, the events
service, one or two pipeline instances of one group); nemeses:

- ``kill``: SIGKILL one of ``targets`` (``pipeline``, ``coordinator``, ``bank``,
  ``events``), restart it after ``downtime_s``;
- ``crash-at-failpoint``: arm ``failpoint`` in the target for one hit, restart it once
  it crashed there;
- ``rebalance``: a second pipeline instance joins the group, and at the next strike
  leaves it (SIGTERM, or at random SIGKILL, so that the group waits for its session to
  expire).

The verdict is :func:`~chaos.pipeline_check.check_pipeline`'s, once the pipeline has
caught up (or ``liveness_bound_s`` after the faults stopped).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import psycopg
from pydantic import BaseModel, ConfigDict, Field, model_validator

from adapters.postgres.ledger import ledger_size
from chaos.nemesis import Fault
from chaos.pipeline_check import PipelineReport, check_pipeline
from chaos.pipeline_stack import BANK, PipelineStack
from chaos.report import save_report, shade_faults
from chaos.runner import RunResult
from chaos.scenario import load_toml, scenario_dir

__all__ = [
    "PipelineNemesisSpec",
    "PipelineScenario",
    "list_pipeline_scenarios",
    "load_pipeline_scenario",
    "plot_pipeline_timeline",
    "run_pipeline_scenario",
]

Target = Literal["pipeline", "coordinator", "bank", "events"]
#: The instance a rebalance adds and removes.
_JOINER = "pipeline-2"


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PipelineNemesisSpec(_Spec):
    kind: Literal["kill", "crash-at-failpoint", "rebalance"]
    targets: list[Target] = Field(default_factory=lambda: list[Target](["pipeline"]), min_length=1)
    failpoint: str | None = None
    every_s: float = Field(4.0, gt=0)
    downtime_s: float = Field(0.5, ge=0)

    @model_validator(mode="after")
    def _failpoint_given(self) -> PipelineNemesisSpec:
        if (self.kind == "crash-at-failpoint") != (self.failpoint is not None):
            raise ValueError("crash-at-failpoint needs a failpoint, and only it takes one")
        return self


class PipelineScenario(_Spec):
    name: str
    description: str
    seed: int = 1
    duration_s: float = Field(20.0, gt=0)
    #: After faults stop, every event must have taken effect within this many seconds.
    liveness_bound_s: float = Field(90.0, gt=0)
    #: Input events per second the producer writes while the faults strike.
    rate: float = Field(40.0, gt=0, le=5000)
    partitions: int = Field(3, ge=1, le=64)
    max_batch: int = Field(20, ge=1)
    nemesis: list[PipelineNemesisSpec] = Field(min_length=1)
    #: The run must be caught: the pipelines run as the build broken on purpose
    #: (``--unsafe-offsets-after-commit``, the classic at-least-once consumer).
    broken_build: bool = False


def list_pipeline_scenarios() -> list[PipelineScenario]:
    return [load_pipeline_scenario(path) for path in sorted(scenario_dir("pipeline").glob("*.toml"))]


def load_pipeline_scenario(name_or_path: str | Path) -> PipelineScenario:
    """A pipeline scenario by name (a file in chaos/scenarios/pipeline) or path; ValueError if unknown."""
    return load_toml(PipelineScenario, scenario_dir("pipeline"), name_or_path, "pipeline scenario")


def run_pipeline_scenario(
    scenario: PipelineScenario,
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
        report = asyncio.run(_run(scenario, directory or Path(tmp), progress))
    if report_path is not None:
        save_report(report, report_path, plot_pipeline_timeline)
    if show:
        _print(report)
    return RunResult(report)


@dataclass
class _Fault(Fault):
    #: Events written before the strike: it is recovered from once they are all booked.
    produced_before: int = 0


@dataclass
class _Run:
    stack: PipelineStack
    rng: random.Random
    t0: float
    faults: list[_Fault]
    misses: int = 0

    def now(self) -> float:
        return time.monotonic() - self.t0

    def failpoints_file(self, name: str) -> Path:
        return self.stack.directory / f"{name}.failpoints"

    def node_name(self, target: str) -> str:
        if target == "pipeline":
            running = [n for n, node in self.stack.pipelines.items() if node.running]
            return self.rng.choice(running or list(self.stack.pipelines))
        return {"coordinator": "coordinator", "bank": BANK, "events": self.stack.events}[target]


async def _run(scenario: PipelineScenario, directory: Path, progress: Callable[[str], None]) -> dict[str, Any]:
    from adapters.kafka.testing import bootstrap_servers
    from adapters.postgres.testing import scratch_database, server_dsn

    bootstrap = await asyncio.to_thread(bootstrap_servers)
    dsn_server = await asyncio.to_thread(server_dsn)
    async with scratch_database(dsn_server, "chaos_pipeline") as ledger_dsn:
        stack = PipelineStack(
            directory / "stack",
            bootstrap,
            ledger_dsn,
            partitions=scenario.partitions,
            max_batch=scenario.max_batch,
            unsafe_offsets_after_commit=scenario.broken_build,
        )
        if any(n.kind == "rebalance" for n in scenario.nemesis):
            stack.add_pipeline(_JOINER)
        run = _Run(stack, random.Random(scenario.seed), time.monotonic(), [])
        for name, node in stack.nodes.items():
            run.failpoints_file(name).write_text("")
            node.env["TWOPC_FAILPOINTS_FILE"] = str(run.failpoints_file(name))
        progress(f"{scenario.name}: starting the coordinator, the bank, the events service and the pipeline ...")
        timeline: list[dict[str, float]] = []
        try:
            await stack.start(pipelines=["pipeline-1"])
            run.t0 = time.monotonic()
            stop_faults, stop_input = asyncio.Event(), asyncio.Event()
            producer = asyncio.create_task(_produce(stack, scenario.rate, stop_input))
            watcher = asyncio.create_task(_watch(run, ledger_dsn, timeline, progress))
            strikes = [
                asyncio.create_task(
                    _nemesis(spec, run, random.Random(run.rng.random()), scenario.duration_s, stop_faults)
                )
                for spec in scenario.nemesis
            ]
            await asyncio.sleep(scenario.duration_s)
            stop_faults.set()
            stop_input.set()
            await asyncio.gather(producer, *strikes)
            progress(
                f"faults stopped at {run.now():.1f}s; {stack.produced} events written; waiting for the pipeline ..."
            )
            report, settle_seconds = await _settled(stack, ledger_dsn, scenario.liveness_bound_s, run)
            await _recoveries(run, ledger_dsn)
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        finally:
            await asyncio.to_thread(stack.stop)
    violations = list(report.violations)
    if settle_seconds is None:
        violations.insert(
            0, f"liveness: not every event took effect {scenario.liveness_bound_s:g}s after the faults stopped"
        )
    if not run.faults:
        violations.append("no fault was injected: the scenario proved nothing")
    return {
        "scenario": scenario.name,
        "seed": scenario.seed,
        "broken_build": scenario.broken_build,
        "duration_s": scenario.duration_s,
        "events": {
            "produced": stack.produced,
            "input": report.inputs,
            "booked": report.booked,
            "published": report.published,
        },
        # Named as the transaction scenarios' reports are, for the suite's table.
        "transactions": {"committed": report.booked},
        "faults_injected": len(run.faults),
        "fault_misses": run.misses,
        "faults": [
            {
                "kind": f.kind,
                "target": f.target,
                "detail": f.detail,
                "started": round(f.started, 3),
                "healed": None if f.healed is None else round(f.healed, 3),
                "recovered": None if f.recovered is None else round(f.recovered, 3),
                "recovery_seconds": None if f.recovery_seconds is None else round(f.recovery_seconds, 3),
            }
            for f in run.faults
        ],
        "recovery_seconds": [round(f.recovery_seconds, 3) for f in run.faults if f.recovery_seconds is not None],
        "offsets": {f"{t}/{p}": {"committed": c, "end": e} for (t, p), (c, e) in sorted(report.offsets.items())},
        "settle_seconds": None if settle_seconds is None else round(settle_seconds, 3),
        "violations": violations,
        "timeline": timeline,
    }


async def _produce(stack: PipelineStack, rate: float, stop: asyncio.Event) -> None:
    """``rate`` events a second, in tenths of a second, until ``stop``."""
    owed = 0.0
    while not stop.is_set():
        owed += rate / 10
        if owed >= 1:
            await stack.produce(int(owed))
            owed -= int(owed)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.1)


async def _nemesis(
    spec: PipelineNemesisSpec, run: _Run, rng: random.Random, duration: float, stop: asyncio.Event
) -> None:
    wait = min(spec.every_s, duration / 2) * rng.uniform(0.5, 1.0)
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), wait)
        wait = spec.every_s * rng.uniform(0.5, 1.5)
        if stop.is_set():
            break
        await _strike(spec, run, rng)
    joiner = run.stack.pipelines.get(_JOINER)
    if spec.kind == "rebalance" and joiner is not None and joiner.running:
        await asyncio.to_thread(joiner.stop)  # the run ends with the group as it began


async def _strike(spec: PipelineNemesisSpec, run: _Run, rng: random.Random) -> None:
    stack = run.stack
    if spec.kind == "rebalance":
        joiner = stack.pipelines[_JOINER]
        if not joiner.running:
            fault = _record(run, "rebalance", _JOINER, "joined the group")
            await stack.start_node(_JOINER)
        elif rng.random() < 0.5:
            fault = _record(run, "rebalance", _JOINER, "left the group (SIGTERM)")
            await asyncio.to_thread(joiner.stop)
        else:
            fault = _record(run, "rebalance", _JOINER, "killed (SIGKILL): its session expires")
            joiner.kill(signal.SIGKILL)
        fault.healed = run.now()
        return
    name = run.node_name(rng.choice(spec.targets))
    node = stack.nodes[name]
    if spec.kind == "kill":
        fault = _record(run, "kill", name, "SIGKILL")
        node.kill(signal.SIGKILL)
    else:
        armed = run.failpoints_file(name)
        armed.write_text(f"{spec.failpoint}=1*crash")
        exited = await _wait_exit(node, timeout=max(10.0, 2 * spec.every_s))
        armed.write_text("")
        if exited is None:
            run.misses += 1
            return
        fault = _record(run, "crash-at-failpoint", name, f"crashed at {spec.failpoint}")
    await asyncio.sleep(spec.downtime_s)
    await stack.start_node(name)
    fault.healed = run.now()


def _record(run: _Run, kind: str, target: str, detail: str) -> _Fault:
    fault = _Fault(kind, target, detail, started=run.now(), produced_before=run.stack.produced)
    run.faults.append(fault)
    return fault


async def _wait_exit(node: Any, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if node.process is not None and node.process.poll() is not None:
            return int(node.process.returncode)
        await asyncio.sleep(0.02)
    return None


async def _booked(ledger_dsn: str) -> int:
    try:
        return await ledger_size(ledger_dsn)
    except psycopg.Error:
        return -1  # the database did not answer this time


async def _watch(run: _Run, ledger_dsn: str, timeline: list[dict[str, float]], progress: Callable[[str], None]) -> None:
    """Every half second: events written and booked; a fault is recovered once every
    event written before it is booked."""
    last_print = 0.0
    while True:
        booked = await _booked(ledger_dsn)
        now = run.now()
        timeline.append({"t": round(now, 2), "produced": run.stack.produced, "booked": max(booked, 0)})
        _mark_recovered(run, booked)
        if now - last_print >= 1.0:
            last_print = now
            last = f"; last: {run.faults[-1].kind} {run.faults[-1].target}" if run.faults else ""
            progress(
                f"{now:5.0f}s  written {run.stack.produced:6d}  booked {max(booked, 0):6d}  "
                f"faults {len(run.faults)}{last}"
            )
        await asyncio.sleep(0.5)


async def _recoveries(run: _Run, ledger_dsn: str) -> None:
    """Faults still unrecovered once everything settled recovered then (the watcher polls)."""
    _mark_recovered(run, await _booked(ledger_dsn))


def _mark_recovered(run: _Run, booked: int) -> None:
    """A fault is recovered from once every event written before it is booked."""
    for fault in run.faults:
        if fault.recovered is None and fault.healed is not None and booked >= fault.produced_before:
            fault.recovered = run.now()


async def _settled(
    stack: PipelineStack, ledger_dsn: str, bound: float, run: _Run
) -> tuple[PipelineReport, float | None]:
    started = time.monotonic()
    report = PipelineReport()
    while True:
        try:
            report = await check_pipeline(
                stack.bootstrap, stack.input_topic, stack.output_topic, stack.group, ledger_dsn
            )
        except (psycopg.Error, RuntimeError, OSError) as exc:
            report = PipelineReport(violations=[f"the checker could not read: {exc!r}"])
        if report.caught_up and report.inputs:
            return report, time.monotonic() - started
        if time.monotonic() - started > bound:
            return report, None
        await asyncio.sleep(1.0)


def plot_pipeline_timeline(report: dict[str, Any], path: Path) -> None:
    """Events written and booked over time, faults as shaded spans, recovery after them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timeline = report["timeline"]
    fig, ax = plt.subplots(figsize=(12, 4.5))
    seconds = [p["t"] for p in timeline]
    ax.plot(seconds, [p["produced"] for p in timeline], label="written to the input", color="tab:grey")
    ax.plot(seconds, [p["booked"] for p in timeline], label="booked in the ledger (and published)", color="tab:green")
    shade_faults(ax, report["faults"], max([p["produced"] for p in timeline] + [1]))
    ax.axvline(report["duration_s"], color="grey", linestyle="--", label="faults and input stop")
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("events")
    ax.set_title(
        f"chaos {report['scenario']} (seed {report['seed']}): red = fault, blue = until caught up; "
        f"{len(report['violations'])} violations"
    )
    ax.legend(loc="lower right")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _print(report: dict[str, Any]) -> None:
    from rich.console import Console

    console = Console()
    events = report["events"]
    console.print(
        f"[bold]{report['scenario']}[/] seed {report['seed']}: {events['produced']} events written, "
        f"{events['booked']} booked, {events['published']} published; {report['faults_injected']} faults"
    )
    for fault in report["faults"]:
        console.print(f"  {fault['started']:6.1f}s  {fault['kind']:18} {fault['target']:12} {fault['detail']}")
    if report["violations"]:
        for violation in report["violations"]:
            console.print(f"[red]violation[/]: {violation}")
    else:
        console.print("[green]no violations[/]")
