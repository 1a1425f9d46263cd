"""Several sets of coordinators (decision logs, numbers of replicas) measured in one run,
side by side: since the machine is shared and noisy, the figures worth comparing are the
ratios between runs of one invocation."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["comparison", "print_comparison"]


def _label(report: dict[str, Any]) -> str:
    label = report["log"] if report["replicas"] == 1 else f"{report['log']} x{report['replicas']}"
    return label if report.get("metrics", True) else f"{label}, metrics off"


def comparison(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One report for several runs: each run's own under ``runs`` (in the order measured),
    and each later run's throughput over the first's under ``throughput_ratios``
    (``"postgres/sqlite"``, ``"postgres x2/postgres"``)."""
    first = reports[0]
    ratios = {
        f"{_label(report)}/{_label(first)}": (
            report["throughput_tps"] / first["throughput_tps"] if first["throughput_tps"] else 0.0
        )
        for report in reports[1:]
    }
    return {
        "workload": first["workload"],
        "concurrency": first["concurrency"],
        "logs": [report["log"] for report in reports],
        "replicas": [report["replicas"] for report in reports],
        "throughput_ratios": ratios,
        "runs": reports,
    }


def print_comparison(report: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    runs = report["runs"]
    table = Table(title=f"twopc bench: side by side ({report['workload']}, {report['concurrency']} clients)")
    columns = (
        "log",
        "committed/s",
        "ratio",
        "p50 ms",
        "p99 ms",
        "decisions per log commit",
        # Where a log's cost goes: the SQLite log's is inside the coordinator, the
        # PostgreSQL log's partly in the server's backends.
        "CPU ms/txn: coordinator + log db",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "log" else "right")
    first_tps = runs[0]["throughput_tps"]
    for run in runs:
        ratio = run["throughput_tps"] / first_tps if first_tps else 0.0
        cpu = run["cpu_ms_per_transaction"]
        table.add_row(
            _label(run),
            f"{run['throughput_tps']:.0f}",
            f"{ratio:.2f}",
            f"{run['latency_ms']['p50']:.1f}",
            f"{run['latency_ms']['p99']:.1f}",
            f"{run['decisions_per_log_commit']:.1f}",
            f"{cpu['coordinator']:.2f}" + (f" + {cpu['log_database']:.2f}" if "log_database" in cpu else ""),
        )
    console.print(table)
