"""``twopc bench``: throughput and latency of the coordinator, beside the bare cost."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def bench(
    workload: Annotated[str, typer.Option(help="mock (postgres, kafka and mixed as their adapters land)")] = "mock",
    participants: Annotated[int, typer.Option(min=1, max=16, help="participants in each transaction")] = 2,
    concurrency: Annotated[int, typer.Option(min=1, max=4096, help="concurrent clients")] = 64,
    duration: Annotated[float, typer.Option(min=0.5, help="seconds measured")] = 10.0,
    warmup: Annotated[float, typer.Option(min=0, help="seconds before measuring")] = 2.0,
    sweep: Annotated[str, typer.Option(help="other concurrencies to measure, for the plot")] = "1,8,32",
    output: Annotated[Path | None, typer.Option(help="write the report as JSON here (and a PNG beside it)")] = None,
    plot: Annotated[Path | None, typer.Option(help="write the plot here (default: beside --output)")] = None,
) -> None:
    """Measure committed transactions per second and latency percentiles, and the baseline."""
    from twopc.bench import run_bench

    try:
        points = [int(p) for p in sweep.split(",") if p.strip()]
    except ValueError:
        raise typer.BadParameter("a comma-separated list of whole numbers", param_hint="--sweep") from None
    try:
        run_bench(
            workload,
            participants,
            concurrency,
            duration,
            warmup,
            points,
            output,
            plot,
            progress=lambda line: typer.echo(line, err=True),
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--workload") from None
