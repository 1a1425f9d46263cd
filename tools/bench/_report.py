"""The benchmark's report: JSON for machines, a table and a plot for people."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = [
    "Series",
    "busy_percent",
    "coordinators_label",
    "machine",
    "machine_cpu_ticks",
    "plot",
    "print_report",
    "process_cpu_seconds",
    "process_peak_rss_mb",
]


def process_cpu_seconds(pid: int | None) -> float:
    """User plus system CPU seconds a process has used, from /proc (0 where unknown)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def machine_cpu_ticks() -> tuple[int, int]:
    """Busy and total CPU ticks of the whole machine so far, all cores, from /proc/stat
    ((0, 0) where unknown): whether a run had the machine to itself, or saturated it."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return (0, 0)
    ticks = [int(field) for field in first[1:8]]  # user nice system idle iowait irq softirq
    total = sum(ticks)
    return (total - ticks[3] - ticks[4], total)


def busy_percent(before: tuple[int, int], after: tuple[int, int]) -> float:
    busy, total = after[0] - before[0], after[1] - before[1]
    return 100 * busy / total if total > 0 else 0.0


def process_peak_rss_mb(pid: int | None) -> float:
    """The most resident memory a process has had, in MiB, from /proc (0 where unknown)."""
    if pid is None:
        return 0.0
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    return 0.0


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.machine()}",
    }


@dataclass(frozen=True)
class Series:
    """One measured set of coordinators, for the plot: its name, its report, its latencies."""

    label: str
    report: dict[str, Any]
    #: ``coordinator`` and ``baseline``: every committed transaction's latency (ms).
    latencies: dict[str, list[float]]


def coordinators_label(report: dict[str, Any]) -> str:
    """``1 coordinator, sqlite log``, ``2 replicas (c1, c2), postgres log``,
    ``HEAD~1 (1a2b3c4): 1 coordinator, sqlite log``."""
    replicas = report.get("replicas", 1)
    who = "1 coordinator" if replicas == 1 else f"{replicas} replicas ({', '.join(report['replica_names'])})"
    label = f"{who}, {report.get('log', 'sqlite')} log"
    label = label if report.get("metrics", True) else f"{label}, metrics off"
    return label if "code" not in report else f"{report['code']}: {label}"


def print_report(report: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    names = ", ".join(report["participant_names"])
    table = Table(title=f"twopc bench: {report['workload']} workload ({names}); {coordinators_label(report)}")
    table.add_column("")
    table.add_column("through the coordinator", justify="right")
    table.add_column("baseline (no coordinator)", justify="right")
    lat, base = report["latency_ms"], report["baseline_latency_ms"]
    table.add_row("committed / s", f"{report['throughput_tps']:.0f}", f"{report['baseline_tps']:.0f}")
    for key in ("p50", "p95", "p99", "max"):
        table.add_row(f"latency {key} (ms)", f"{lat[key]:.1f}", f"{base[key]:.1f}")
    table.add_row(
        "aborted / errors",
        f"{report['aborted']} / {report['errors']}",
        f"{report['baseline_aborted']} / {report['baseline_errors']}",
    )
    table.add_row("decisions per log commit", f"{report['decisions_per_log_commit']:.1f}", "")
    console.print(table)
    if len(report.get("by_replica", {})) > 1:
        console.print(
            "by replica: "
            + "; ".join(
                f"{replica} {figures['decisions_logged']:.0f} decisions in {figures['log_commits']:.0f} log commits"
                for replica, figures in report["by_replica"].items()
            )
        )
    per_transaction = ", ".join(
        f"{who.replace('_', ' ')} {ms:.2f}" for who, ms in report["cpu_ms_per_transaction"].items()
    )
    log_database = report.get("log_database_cpu_percent")
    console.print(
        f"concurrency {report['concurrency']}, {report['duration_s']:.0f} s measured; "
        f"throughput vs baseline: {report['overhead_ratio']:.2f}; "
        f"CPU (% of a core): coordinator {report['coordinator_cpu_percent']:.0f}, "
        + (f"log database {log_database:.0f}, " if log_database is not None else "")
        + f"participants {report['participants_cpu_percent']:.0f}, "
        f"load generator {report['load_generator_cpu_percent']:.0f}; "
        f"CPU ms per transaction: {per_transaction}; "
        f"peak memory (MiB): coordinator {report['peak_rss_mb']['coordinator']:.0f}, "
        f"participants {report['peak_rss_mb']['participants']:.0f}; "
        f"participant calls per exchange {report['calls_per_exchange']:.1f}; "
        f"decisions per log commit {report['decisions_per_log_commit']:.1f}; "
        f"machine busy {report['machine_busy_percent']:.0f} % of all cores "
        f"(baseline {report['baseline_machine_busy_percent']:.0f} %)"
    )
    console.print(f"baseline: {report['baseline']}")
    if report["sweep"]:
        console.print(
            "throughput by concurrency: "
            + ", ".join(f"{p['concurrency']}: {p['throughput_tps']:.0f}/s" for p in report["sweep"])
        )
    for sample in report.get("error_samples", []):
        console.print(f"[red]error:[/] {sample}")


def plot(series: list[Series], path: Path) -> None:
    """Latency distributions (CDF) and throughput against concurrency, in one PNG; one
    line of each for every set of coordinators measured, and the baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report = series[0].report
    several = len(series) > 1
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    # The baseline is the same for every series (measured once): drawn once, last.
    curves = [(f"coordinator, {s.label} log" if several else "coordinator", s.latencies["coordinator"]) for s in series]
    curves.append(("baseline", series[0].latencies.get("baseline", [])))
    for label, values in curves:
        if not values:
            continue
        ordered = sorted(values)
        fractions = [(i + 1) / len(ordered) for i in range(len(ordered))]
        left.plot(ordered, fractions, label=label)
    if not several:
        for key in ("p50", "p99"):
            left.axvline(report["latency_ms"][key], linestyle=":", color="grey")
            left.annotate(key, (report["latency_ms"][key], 0.02), rotation=90, color="grey")
    left.set_xscale("log")
    left.set_xlabel("latency (ms, log scale)")
    left.set_ylabel("fraction of committed transactions")
    left.set_title("commit latency, cumulative")
    left.legend()
    left.grid(True, which="both", alpha=0.3)

    for s in series:
        points = sorted(s.report["sweep"], key=lambda p: p["concurrency"])
        right.plot(
            [p["concurrency"] for p in points],
            [p["throughput_tps"] for p in points],
            marker="o",
            label=f"coordinator, {s.label} log" if several else "coordinator",
        )
    right.axhline(report["baseline_tps"], linestyle="--", color="grey", label=f"baseline at {report['concurrency']}")
    right.set_xscale("log", base=2)
    right.set_xlabel("concurrent clients")
    right.set_ylabel("committed transactions / s")
    right.set_title("throughput against concurrency")
    right.legend()
    right.grid(True, alpha=0.3)
    names = ", ".join(report["participant_names"])
    title = f"twopc bench — {report['workload']} workload ({names})"
    fig.suptitle(title if several else f"{title}; {coordinators_label(report)}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
