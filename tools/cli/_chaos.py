"""``twopc chaos list|run``: kill nodes mid-commit and check that nothing was lost."""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["app", "list_scenarios", "run", "suite"]

app = typer.Typer(help="Chaos scenarios: faults under load, then invariant checks.", no_args_is_help=True)


@app.command("list")
def list_scenarios() -> None:
    """The scenarios that ship with twopc."""
    from rich.console import Console
    from rich.table import Table

    from chaos import list_pipeline_scenarios
    from chaos import list_scenarios as scenarios

    table = Table("scenario", "participants", "nemeses", "description")
    for s in scenarios():
        table.add_row(
            s.name,
            ", ".join(f"{p.name} ({p.kind})" for p in s.participants),
            ", ".join(f"{n.kind} {n.failpoint or n.target}" for n in s.nemesis),
            s.description,
        )
    for p in list_pipeline_scenarios():
        table.add_row(
            p.name,
            "the pipeline, bank (bank), events (events)",
            ", ".join(f"{n.kind} {n.failpoint or ', '.join(n.targets)}" for n in p.nemesis),
            p.description,
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
    from chaos import load_pipeline_scenario, load_scenario, run_pipeline_scenario, run_scenario

    try:
        pipeline = load_pipeline_scenario(scenario)
    except ValueError:
        pass
    else:
        if fixed:
            if not pipeline.broken_build:
                raise typer.BadParameter(f"{pipeline.name} is not a broken-build scenario", param_hint="--fixed")
            pipeline = pipeline.model_copy(update={"broken_build": False})
        ran = run_pipeline_scenario(
            pipeline, seed, duration, report, directory, progress=lambda line: typer.echo(line, err=True)
        )
        if pipeline.broken_build:
            caught = not ran.ok and ran.report["faults_injected"] > 0
            typer.echo(f"the build broken on purpose was {'caught' if caught else 'NOT caught'}", err=True)
        if not ran.ok:
            raise typer.Exit(1)
        return
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

    from chaos import PipelineScenario, list_pipeline_scenarios, run_pipeline_scenario, run_scenario
    from chaos import list_scenarios as scenarios

    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise typer.BadParameter("a comma-separated list of whole numbers", param_hint="--seeds") from None
    table = Table(title="chaos suite")
    table.add_column("scenario", no_wrap=True)
    for column in ("seed", "committed", "faults", "recovery max (s)", "verdict"):
        table.add_column(column)
    failed = 0
    runs: list[Any] = [*scenarios(), *list_pipeline_scenarios()]
    for scenario in runs:
        for seed in seed_list:
            report_path = reports / f"{scenario.name}-{seed}.json" if reports else None
            runner = run_pipeline_scenario if isinstance(scenario, PipelineScenario) else run_scenario
            try:
                result = runner(
                    scenario, seed, duration, report_path, show=False, progress=lambda line: typer.echo(line, err=True)
                )
            except Exception as exc:  # a run that cannot finish is a failed run; the others still run
                typer.echo(f"{scenario.name} (seed {seed}) did not finish:\n{traceback.format_exc()}", err=True)
                table.add_row(scenario.name, str(seed), "-", "-", "-", f"[red]error: {type(exc).__name__}[/]")
                failed += 1
                continue
            report = result.report
            caught = bool(report["violations"]) and report["faults_injected"] > 0
            broken = getattr(scenario, "broken_build", False)
            good = caught if broken else result.ok
            failed += not good
            if broken:
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
