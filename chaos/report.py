"""A chaos run's report: JSON, a table on screen, and a timeline plot."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["plot_timeline", "print_report", "save_report", "shade_faults"]


def save_report(report: dict[str, Any], path: Path, plot: Callable[[dict[str, Any], Path], None]) -> None:
    """The report as JSON at ``path`` and its ``plot`` as a PNG beside it (named in the report)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    png = path.with_suffix(".png")
    plot(report, png)
    report["plot"] = str(png)


def shade_faults(ax: Any, faults: list[dict[str, Any]], top: float) -> None:
    """Each fault as a red span from its strike to its healing, named, and a blue one
    until the system recovered."""
    for i, fault in enumerate(faults):
        end = fault["healed"] if fault["healed"] is not None else fault["started"]
        ax.axvspan(fault["started"], max(end, fault["started"] + 0.1), color="tab:red", alpha=0.15)
        if fault["recovered"] is not None and fault["healed"] is not None:
            ax.axvspan(fault["healed"], fault["recovered"], color="tab:blue", alpha=0.1)
        if fault.get("takeover_seconds") is not None:
            ax.axvline(fault["started"] + fault["takeover_seconds"], color="tab:purple", linestyle=":", alpha=0.8)
        ax.annotate(
            f"{fault['kind']} {fault['target']}",
            (fault["started"], top * (0.95 - 0.08 * (i % 5))),
            fontsize=7,
            color="tab:red",
        )


def print_report(report: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    tx = report["transactions"]
    verdict = (
        "[green]no violations[/]" if not report["violations"] else f"[red]{len(report['violations'])} violations[/]"
    )
    console.print(
        f"[bold]{report['scenario']}[/] seed {report['seed']}, {report['duration_s']:.0f}s: "
        f"{tx['committed']} committed, {tx['aborted']} aborted, {tx['unknown']} unknown to their clients; "
        f"{report['faults_injected']} faults; {verdict}"
    )
    if report.get("replicas", 1) > 1:  # reports of older runs have no replicas
        takeovers = report["takeover_seconds"]
        console.print(
            f"{report['replicas']} replicas over a {report['log']} log; "
            f"{len(takeovers)} takeovers{f' (max {max(takeovers):.2f}s after the strike)' if takeovers else ''}; "
            f"{report['retries']} client retries at another replica (same Idempotency-Key)"
        )
    replicas = report.get("replicas", 1) > 1
    columns = [
        "t (s)",
        "fault",
        "target",
        "detail",
        *(["taken over after (s)"] if replicas else []),
        "recovered after (s)",
    ]
    table = Table(*columns, title="faults")
    for fault in report["faults"]:
        recovery, takeover = fault["recovery_seconds"], fault.get("takeover_seconds")
        taken = ["-" if takeover is None else f"{takeover:.2f} by {fault['taken_over_by']}"] if replicas else []
        table.add_row(
            f"{fault['started']:.1f}",
            fault["kind"],
            fault["target"],
            fault["detail"],
            *taken,
            "-" if recovery is None else f"{recovery:.2f}",
        )
    console.print(table)
    settle = report["settle_seconds"]
    console.print(
        f"settled {'-' if settle is None else f'{settle:.1f}'}s after the faults stopped; "
        f"unknown outcomes resolved: {report['resolved_unknown']}; effects checked: {report['effects_checked']}"
    )
    for violation in report["violations"]:
        console.print(f"[red]violation[/] {violation}")


def plot_timeline(report: dict[str, Any], path: Path) -> None:
    """Throughput per second by outcome, faults as shaded spans, recovery after them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timeline = report["timeline"]
    fig, ax = plt.subplots(figsize=(12, 4.5))
    seconds = [p["t"] for p in timeline]
    for outcome, color in (("committed", "tab:green"), ("aborted", "tab:orange"), ("unknown", "tab:red")):
        ax.plot(seconds, [p[outcome] for p in timeline], label=outcome, color=color)
    shade_faults(ax, report["faults"], max([p["committed"] for p in timeline] + [1]))
    ax.axvline(report["duration_s"], color="grey", linestyle="--", label="faults stop")
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("transactions ended per second")
    ax.set_title(
        f"chaos {report['scenario']} (seed {report['seed']}): red = fault, blue = until recovered, "
        "purple = taken over; "
        f"{len(report['violations'])} violations"
    )
    ax.legend(loc="lower right")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
