"""A short smoke run of `twopc bench`: the figures it promises are there and sensible."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from twopc.bench._load import percentile
from twopc.supervisor import twopc_command


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([], 99) == 0.0


@pytest.mark.slow
def test_a_short_mock_bench_writes_its_report_and_plot(tmp_path: Path) -> None:
    output = tmp_path / "bench.json"
    run = subprocess.run(
        twopc_command(
            "bench",
            "--workload",
            "mock",
            "--concurrency",
            "8",
            "--duration",
            "1.5",
            "--warmup",
            "0.5",
            "--sweep",
            "2",
            "--output",
            str(output),
        ),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(output.read_text())
    assert report["committed"] > 0 and report["errors"] == 0
    assert report["throughput_tps"] > 0 and report["baseline_tps"] > 0
    lat = report["latency_ms"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert report["decisions_per_log_commit"] >= 1.0
    assert [p["concurrency"] for p in report["sweep"]] == [2, 8]
    png = output.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "committed / s" in run.stdout  # the table for people


def test_an_unknown_workload_is_refused_clearly() -> None:
    run = subprocess.run(twopc_command("bench", "--workload", "nope"), capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "nope" in run.stderr
