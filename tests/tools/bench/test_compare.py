"""Several decision logs in one run: the comparison report, and the options that choose them."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from tools.bench._compare import comparison
from tools.cli._app import app


def _run(log: str, replicas: int, tps: float) -> dict[str, Any]:
    return {"workload": "mock", "concurrency": 64, "log": log, "replicas": replicas, "throughput_tps": tps}


def test_the_comparison_holds_every_run_and_each_later_ones_throughput_over_the_firsts() -> None:
    runs = [_run("sqlite", 1, 1000.0), _run("postgres", 1, 800.0)]
    report = comparison(runs)
    assert report["logs"] == ["sqlite", "postgres"]
    assert report["runs"] == runs
    assert report["throughput_ratios"] == {"postgres/sqlite": pytest.approx(0.8)}


def test_a_first_run_that_committed_nothing_gives_a_ratio_of_zero_not_a_division_error() -> None:
    report = comparison([_run("sqlite", 1, 0.0), _run("postgres", 1, 500.0)])
    assert report["throughput_ratios"] == {"postgres/sqlite": 0.0}


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--replicas", "2"], "--replicas"),  # the default log is SQLite
        (["--replicas", "2", "--log", "sqlite,postgres"], "--replicas"),
        (["--log", "mysql"], "--log"),
        (["--log", "postgres,postgres"], "--log"),
    ],
)
def test_the_cli_refuses_replicas_without_a_shared_log_and_unknown_logs(options: list[str], named: str) -> None:
    result = CliRunner().invoke(app, ["bench", *options])
    assert result.exit_code == 2
    assert named in result.output
