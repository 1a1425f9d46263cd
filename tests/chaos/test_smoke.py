"""Short chaos runs with real processes: correct builds pass, a broken build is caught."""

from __future__ import annotations

import pytest

from chaos import load_scenario, run_scenario

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    "name",
    [
        "coordinator-crash-after-first-commit",
        "participant-crash-before-commit",
        "partition-participant",
        "mixed-kill-any",
        "events-crash-after-publish-before-marker",
    ],
)
def test_a_short_run_injects_faults_and_finds_no_violation(name: str) -> None:
    result = run_scenario(load_scenario(name), seed=7, duration=5, show=False, progress=lambda _: None)
    report = result.report
    assert report["faults_injected"] >= 1
    assert report["transactions"]["committed"] > 0
    assert report["violations"] == []
    assert report["settle_seconds"] is not None


def test_the_broken_build_is_caught_by_the_checkers() -> None:
    result = run_scenario(
        load_scenario("broken-build-lazy-decision"), seed=7, duration=6, show=False, progress=lambda _: None
    )
    assert result.report["faults_injected"] >= 1
    assert any(v.startswith(("atomicity", "durability", "no_effect_of_aborted")) for v in result.report["violations"])
