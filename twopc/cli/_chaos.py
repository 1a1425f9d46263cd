"""``twopc chaos list|run``: kill nodes mid-commit and check that nothing was lost."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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
) -> None:
    """Run a scenario; exit status 1 on any violation."""
    from chaos import load_scenario, run_scenario

    try:
        loaded = load_scenario(scenario)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="SCENARIO") from None
    result = run_scenario(loaded, seed, duration, report, directory, progress=lambda line: typer.echo(line, err=True))
    if not result.ok:
        raise typer.Exit(1)
