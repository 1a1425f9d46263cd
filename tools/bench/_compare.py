"""Several sets of coordinators (decision logs, numbers of replicas, versions of the
code) measured in one run, side by side: since the machine is shared and noisy, the
figures worth comparing are the ratios between runs of one invocation."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["comparison", "print_comparison", "print_ref_comparison", "ref_comparison"]

#: The CPU roles a version comparison shows, in this order (``log_database`` where there is one).
_CPU_ROLES = ("coordinator", "log_database", "participants", "load_generator")


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


def _ratio(head: float, ref: float) -> float:
    return head / ref if ref else 0.0


def ref_comparison(head: dict[str, Any], ref: dict[str, Any], compared: dict[str, str]) -> dict[str, Any]:
    """One report for this checkout's services and another version's, measured in the same
    run: both reports under ``runs`` (this checkout's first), what was compared under
    ``compare_ref`` (``ref``, ``sha``, ``label``, ``packages``) and, under ``ratios``, each
    figure of this checkout over the ref's (throughput, p50 and p99, CPU per committed
    transaction by role, decisions per log commit)."""
    head_cpu, ref_cpu = head["cpu_ms_per_transaction"], ref["cpu_ms_per_transaction"]
    return {
        "workload": head["workload"],
        "concurrency": head["concurrency"],
        "compare_ref": compared,
        "ratios": {
            "throughput_tps": _ratio(head["throughput_tps"], ref["throughput_tps"]),
            "latency_ms": {key: _ratio(head["latency_ms"][key], ref["latency_ms"][key]) for key in ("p50", "p99")},
            "cpu_ms_per_transaction": {
                role: _ratio(head_cpu[role], ref_cpu[role])
                for role in _CPU_ROLES
                if role in head_cpu and role in ref_cpu
            },
            "decisions_per_log_commit": _ratio(head["decisions_per_log_commit"], ref["decisions_per_log_commit"]),
        },
        # As the other side-by-side modes name theirs.
        "throughput_ratios": {
            f"{head['code']}/{ref['code']}": _ratio(head["throughput_tps"], ref["throughput_tps"]),
        },
        "runs": [head, ref],
    }


def print_ref_comparison(report: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    head, ref = report["runs"]
    ratios, compared = report["ratios"], report["compare_ref"]
    table = Table(
        title=f"twopc bench: this checkout against {compared['label']} "
        f"({report['workload']}, {report['concurrency']} clients, {_label(head)} log)"
    )
    table.add_column("", no_wrap=True)
    for column in (head["code"], ref["code"], "this checkout / ref"):
        table.add_column(column, justify="right")
    table.add_row(
        "committed/s",
        f"{head['throughput_tps']:.0f}",
        f"{ref['throughput_tps']:.0f}",
        f"{ratios['throughput_tps']:.2f}",
    )
    for key in ("p50", "p99"):
        table.add_row(
            f"latency {key} (ms)",
            f"{head['latency_ms'][key]:.1f}",
            f"{ref['latency_ms'][key]:.1f}",
            f"{ratios['latency_ms'][key]:.2f}",
        )
    for role, ratio in ratios["cpu_ms_per_transaction"].items():
        table.add_row(
            f"CPU ms/txn: {role.replace('_', ' ')}",
            f"{head['cpu_ms_per_transaction'][role]:.3f}",
            f"{ref['cpu_ms_per_transaction'][role]:.3f}",
            f"{ratio:.2f}",
        )
    table.add_row(
        "decisions per log commit",
        f"{head['decisions_per_log_commit']:.1f}",
        f"{ref['decisions_per_log_commit']:.1f}",
        f"{ratios['decisions_per_log_commit']:.2f}",
    )
    table.add_row(
        "aborted / errors", f"{head['aborted']} / {head['errors']}", f"{ref['aborted']} / {ref['errors']}", ""
    )
    console.print(table)
    console.print(f"{compared['label']} is {compared['sha']}; its packages: {compared['packages']}")
