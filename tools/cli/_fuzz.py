"""``twopc fuzz-api``: property-based tests of the REST API against its own OpenAPI
document (schemathesis, every check), on a coordinator started for the run."""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = ["fuzz_api"]


def fuzz_api(
    max_time: Annotated[int, typer.Option(help="seconds of generated requests", min=1)] = 300,
    seed: Annotated[int | None, typer.Option(help="schemathesis' seed, to replay a run")] = None,
    workers: Annotated[int, typer.Option(help="concurrent schemathesis workers", min=1, max=16)] = 1,
) -> None:
    """Fuzz the coordinator's API with schemathesis; exits 1 if any check failed."""
    from tools.fuzz import fuzz_api as run

    result = run(max_time, seed=seed, workers=workers, progress=lambda line: typer.echo(line, err=True))
    typer.echo(result.report)
    if result.exit_code != 0:
        raise typer.Exit(1)
