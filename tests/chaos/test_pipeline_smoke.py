"""Short pipeline chaos runs with real processes: kills and rebalances under input leave
every event taking effect once; the at-least-once build broken on purpose is caught."""

from __future__ import annotations

import pytest

from chaos import load_pipeline_scenario, run_pipeline_scenario

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(("name", "duration"), [("pipeline-kill", 8), ("pipeline-rebalance", 10)])
def test_a_short_pipeline_run_injects_faults_and_finds_no_violation(name: str, duration: float) -> None:
    report = run_pipeline_scenario(
        load_pipeline_scenario(name), seed=7, duration=duration, show=False, progress=lambda _: None
    ).report
    assert report["faults_injected"] >= 1
    assert report["events"]["produced"] > 0
    assert report["events"]["produced"] == report["events"]["booked"] == report["events"]["published"]
    assert report["violations"] == []


def test_the_at_least_once_build_is_caught_processing_events_twice() -> None:
    report = run_pipeline_scenario(
        load_pipeline_scenario("broken-build-offsets-after-commit"),
        seed=7,
        duration=6,
        show=False,
        progress=lambda _: None,
    ).report
    assert report["faults_injected"] >= 1
    assert any("more than once" in v for v in report["violations"]), report["violations"]
