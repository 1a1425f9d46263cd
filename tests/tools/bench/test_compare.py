"""Several decision logs, or two versions of the code, in one run: the comparison
reports, slices of a log added up, and the options that choose what is compared."""

from __future__ import annotations

from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from tools.bench._compare import comparison, print_ref_comparison, ref_comparison
from tools.bench._coordinators import Coordinators
from tools.bench._load import LoadResult
from tools.bench._measure import Measured, combined
from tools.cli._app import app


def _run(log: str, replicas: int, tps: float) -> dict[str, Any]:
    return {"workload": "mock", "concurrency": 64, "log": log, "replicas": replicas, "throughput_tps": tps}


def test_the_comparison_holds_every_run_and_each_later_ones_throughput_over_the_firsts() -> None:
    runs = [_run("sqlite", 1, 1000.0), _run("postgres", 1, 800.0)]
    report = comparison(runs)
    assert report["logs"] == ["sqlite", "postgres"]
    assert report["replicas"] == [1, 1]
    assert report["runs"] == runs
    assert report["throughput_ratios"] == {"postgres/sqlite": pytest.approx(0.8)}


def test_replica_counts_are_named_in_the_ratios() -> None:
    report = comparison([_run("postgres", 1, 1000.0), _run("postgres", 2, 1100.0)])
    assert report["throughput_ratios"] == {"postgres x2/postgres": pytest.approx(1.1)}
    assert report["replicas"] == [1, 2]


def test_a_run_without_metrics_is_named_so_in_the_ratios() -> None:
    off = {**_run("sqlite", 1, 990.0), "metrics": False}
    report = comparison([_run("sqlite", 1, 1000.0), off])
    assert report["throughput_ratios"] == {"sqlite, metrics off/sqlite": pytest.approx(0.99)}


def test_coordinators_without_metrics_switch_the_histograms_off_in_their_configuration() -> None:
    assert Coordinators(metrics=False).coordinator_toml.strip().splitlines() == ["[metrics]", "enabled = false"]
    assert Coordinators().coordinator_toml == ""
    assert Coordinators(metrics=False).label == "sqlite, metrics off"


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
        (["--replicas", "1,2"], "--replicas"),  # SQLite cannot have the second
        (["--log", "postgres", "--replicas", "0"], "--replicas"),
        (["--log", "postgres", "--replicas", "two"], "--replicas"),
        (["--metrics", "maybe"], "--metrics"),
        (["--metrics", "on,on"], "--metrics"),
    ],
)
def test_the_cli_refuses_replicas_without_a_shared_log_and_unknown_logs(options: list[str], named: str) -> None:
    result = CliRunner().invoke(app, ["bench", *options])
    assert result.exit_code == 2
    assert named in result.output


def _part(committed: int, seconds: float, latencies: list[float], decisions: float, commits: float) -> Measured:
    return Measured(
        LoadResult(seconds, committed, aborted=0, errors=0, latencies_ms=latencies),
        {"c1": {"decisions_logged": decisions, "log_commits": commits}},
        {"coordinator": seconds / 2},
        (int(seconds * 50), int(seconds * 100)),
    )


def test_slices_of_one_log_add_up_to_one_measurement() -> None:
    whole = combined([_part(100, 2.0, [1.0, 3.0], 90, 9), _part(300, 2.0, [2.0], 290, 11)])
    assert (whole.result.committed, whole.result.seconds) == (400, 4.0)
    assert whole.result.throughput == 100.0
    assert sorted(whole.result.latencies_ms) == [1.0, 2.0, 3.0]
    assert whole.by_replica == {"c1": {"decisions_logged": 380, "log_commits": 20}}
    assert whole.cpu_used == {"coordinator": 2.0}
    assert whole.machine_ticks == (200, 400)


def _version(code: str, tps: float, p50: float, p99: float, cpu: dict[str, float]) -> dict[str, Any]:
    return {
        **_run("sqlite", 1, tps),
        "code": code,
        "latency_ms": {"p50": p50, "p95": p99, "p99": p99, "max": p99},
        "cpu_ms_per_transaction": cpu,
        "decisions_per_log_commit": 4.0,
        "aborted": 0,
        "errors": 0,
    }


COMPARED = {"ref": "v1", "sha": "1a2b3c4" + "0" * 33, "label": "v1 (1a2b3c4)", "packages": "its requirements.lock"}


def test_a_version_comparison_gives_every_figure_of_this_checkout_over_the_refs() -> None:
    head = _version(
        "this checkout", 1200.0, 40.0, 90.0, {"coordinator": 0.5, "participants": 0.6, "load_generator": 0.2}
    )
    ref = _version(
        "v1 (1a2b3c4)", 1000.0, 50.0, 60.0, {"coordinator": 1.0, "participants": 0.6, "load_generator": 0.25}
    )

    report = ref_comparison(head, ref, COMPARED)

    assert report["runs"] == [head, ref] and report["compare_ref"] == COMPARED
    ratios = report["ratios"]
    assert ratios["throughput_tps"] == pytest.approx(1.2)
    assert ratios["latency_ms"] == {"p50": pytest.approx(0.8), "p99": pytest.approx(1.5)}
    assert ratios["cpu_ms_per_transaction"] == {
        "coordinator": pytest.approx(0.5),
        "participants": pytest.approx(1.0),
        "load_generator": pytest.approx(0.8),
    }
    assert report["throughput_ratios"] == {"this checkout/v1 (1a2b3c4)": pytest.approx(1.2)}


def test_a_role_only_one_version_has_gets_no_ratio_and_a_ref_that_committed_nothing_gives_zero() -> None:
    head = _version("this checkout", 900.0, 40.0, 90.0, {"coordinator": 0.5, "log_database": 0.3})
    ref = _version("v1 (1a2b3c4)", 0.0, 0.0, 0.0, {"coordinator": 0.0})

    ratios = ref_comparison(head, ref, COMPARED)["ratios"]

    assert ratios["throughput_tps"] == 0.0 and ratios["latency_ms"] == {"p50": 0.0, "p99": 0.0}
    assert ratios["cpu_ms_per_transaction"] == {"coordinator": 0.0}


def test_the_version_table_names_both_versions_and_the_refs_commit() -> None:
    head = _version(
        "this checkout", 1200.0, 40.0, 90.0, {"coordinator": 0.5, "participants": 0.6, "load_generator": 0.2}
    )
    ref = _version(
        "v1 (1a2b3c4)", 1000.0, 50.0, 60.0, {"coordinator": 1.0, "participants": 0.6, "load_generator": 0.25}
    )
    console = Console(record=True, width=200)

    print_ref_comparison(ref_comparison(head, ref, COMPARED), console)

    text = console.export_text()
    assert "this checkout against v1 (1a2b3c4)" in text
    assert "CPU ms/txn: coordinator" in text and "CPU ms/txn: load generator" in text
    assert COMPARED["sha"] in text and "its requirements.lock" in text


@pytest.mark.parametrize(
    "options",
    [
        ["--log", "sqlite,postgres"],
        ["--metrics", "on,off"],
        ["--log", "postgres", "--replicas", "1,2"],
        ["--workload", "pipeline"],
    ],
)
def test_the_cli_compares_versions_of_one_set_of_coordinators_only(options: list[str]) -> None:
    result = CliRunner().invoke(app, ["bench", "--compare-ref", "HEAD", *options])
    assert result.exit_code == 2
    assert "--compare-ref" in result.output


def test_an_unknown_ref_ends_the_bench_with_a_clear_message_before_anything_starts() -> None:
    result = CliRunner().invoke(app, ["bench", "--compare-ref", "no-such-ref-anywhere"])
    assert result.exit_code == 2
    assert "twopc bench: --compare-ref 'no-such-ref-anywhere': no such commit" in result.output
    assert "Traceback" not in result.output
