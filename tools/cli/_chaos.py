"""``twopc chaos list|run``: kill nodes mid-commit and check that nothing was lost."""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["app", "list_scenarios", "run", "suite"]

app = typer.Typer(help="Chaos scenarios: faults under load, then invariant checks.", no_args_is_help=True)


@app.command("list")
def list_scenarios() -> None:
    """The scenarios that ship with twopc."""
    from rich.console import Console
    from rich.table import Table

    from chaos import list_scenarios as scenarios

    table = Table("scenario", "participants", "nemeses", "description")
    for s in scenarios():
        table.add_row(
            s.name,
            ", ".join(f"{p.name} ({p.kind})" for p in s.participants),
            ", ".join(f"{n.kind} {n.failpoint or n.target}" for n in s.nemesis),
            s.description,
        )
    Console().print(table)


@app.command("run")
def run(
    scenario: Annotated[str, typer.Argument(help="a scenario name (see `twopc chaos list`) or a TOML file")],
    seed: Annotated[int | None, typer.Option(help="the random seed (default: the scenario's)")] = None,
    duration: Annotated[float | None, typer.Option(min=1, help="seconds of faults under load")] = None,
    report: Annotated[
        Path | None, typer.Option(help="write the report as JSON here, and a PNG timeline beside it")
    ] = None,
    directory: Annotated[Path | None, typer.Option("--dir", help="keep the processes' data and logs here")] = None,
    fixed: Annotated[
        bool,
        typer.Option(
            "--fixed", help="a broken-build scenario on a correct build (its unsafe settings off): it must pass"
        ),
    ] = False,
) -> None:
    """Run a scenario; exit status 1 on any violation (which a broken-build scenario
    must show: it says whether it was caught)."""
    from chaos import load_scenario, run_scenario

    try:
        loaded = load_scenario(scenario)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="SCENARIO") from None
    if fixed:
        if not loaded.broken_build:
            raise typer.BadParameter(f"{loaded.name} is not a broken-build scenario", param_hint="--fixed")
        loaded = loaded.fixed()
    result = run_scenario(loaded, seed, duration, report, directory, progress=lambda line: typer.echo(line, err=True))
    if loaded.broken_build:
        caught = not result.ok and result.report["faults_injected"] > 0
        typer.echo(f"the build broken on purpose was {'caught' if caught else 'NOT caught'}", err=True)
    if not result.ok:
        raise typer.Exit(1)


@app.command("suite")
def suite(
    seeds: Annotated[str, typer.Option(help="comma-separated seeds; every scenario runs with each")] = "1,2,3",
    duration: Annotated[float | None, typer.Option(min=1, help="seconds of faults per run")] = None,
    reports: Annotated[Path | None, typer.Option(help="a directory for every run's JSON report and PNG")] = None,
) -> None:
    """Run every scenario with several seeds; the broken-build ones must be caught.

    Exit status 1 when a scenario shows a violation or injects no fault, or when a
    deliberately broken build goes unnoticed.
    """
    from rich.console import Console
    from rich.table import Table

    from chaos import list_scenarios as scenarios
    from chaos import run_scenario

    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise typer.BadParameter("a comma-separated list of whole numbers", param_hint="--seeds") from None
    table = Table(title="chaos suite")
    table.add_column("scenario", no_wrap=True)
    for column in ("seed", "committed", "faults", "recovery max (s)", "verdict"):
        table.add_column(column)
    failed = 0
    for scenario in scenarios():
        for seed in seed_list:
            report_path = reports / f"{scenario.name}-{seed}.json" if reports else None
            try:
                result = run_scenario(
                    scenario, seed, duration, report_path, show=False, progress=lambda line: typer.echo(line, err=True)
                )
            except Exception as exc:  # a run that cannot finish is a failed run; the others still run
                typer.echo(f"{scenario.name} (seed {seed}) did not finish:\n{traceback.format_exc()}", err=True)
                table.add_row(scenario.name, str(seed), "-", "-", "-", f"[red]error: {type(exc).__name__}[/]")
                failed += 1
                continue
            report = result.report
            caught = bool(report["violations"]) and report["faults_injected"] > 0
            good = caught if scenario.broken_build else result.ok
            failed += not good
            if scenario.broken_build:
                verdict = "[green]caught[/]" if caught else "[red]NOT CAUGHT[/]"
            else:
                verdict = "[green]ok[/]" if good else f"[red]{len(report['violations'])} violations[/]"
            recoveries = report["recovery_seconds"]
            table.add_row(
                scenario.name,
                str(seed),
                str(report["transactions"]["committed"]),
                str(report["faults_injected"]),
                f"{max(recoveries):.2f}" if recoveries else "-",
                verdict,
            )
    # Piped output gets room for whole scenario names.
    Console(width=None if sys.stdout.isatty() else 140).print(table)
    if failed:
        raise typer.Exit(1)
