"""Short chaos runs with real processes: correct builds pass, a broken build is caught."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from chaos import load_scenario, run_scenario
from chaos.participants import MockQueueKind

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


@pytest.mark.parametrize(
    ("name", "taken_over"),
    [("replica-kill", True), ("replica-zombie", True), ("replica-partition", True), ("log-restart", False)],
)
def test_a_short_run_of_replicas_over_the_shared_log_finds_no_violation(name: str, taken_over: bool) -> None:
    report = run_scenario(load_scenario(name), seed=7, duration=6, show=False, progress=lambda _: None).report
    assert report["faults_injected"] >= 1
    assert report["transactions"]["committed"] > 0
    assert report["violations"] == []
    if taken_over:  # a replica struck for longer than its lease was taken over by another
        assert report["takeover_seconds"], report["faults"]


def test_a_replica_that_decides_after_it_was_taken_over_is_caught() -> None:
    result = run_scenario(
        load_scenario("broken-build-unfenced-zombie"), seed=7, duration=8, show=False, progress=lambda _: None
    )
    assert result.report["faults_injected"] >= 1
    assert any(v.startswith(("one_outcome", "durability", "no_effect_of_aborted")) for v in result.report["violations"])


def test_the_broken_build_is_caught_by_the_checkers() -> None:
    result = run_scenario(
        load_scenario("broken-build-lazy-decision"), seed=7, duration=6, show=False, progress=lambda _: None
    )
    assert result.report["faults_injected"] >= 1
    assert any(v.startswith(("atomicity", "durability", "no_effect_of_aborted")) for v in result.report["violations"])


def test_a_run_that_fails_while_starting_leaves_no_process_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def refuse(self: object, http: object) -> None:
        raise RuntimeError("populate refused on purpose")

    monkeypatch.setattr(MockQueueKind, "populate", refuse)
    with pytest.raises(RuntimeError, match="on purpose"):
        run_scenario(
            load_scenario("kill-coordinator"), duration=2, directory=tmp_path, show=False, progress=lambda _: None
        )
    left = [pid for pid in os.listdir("/proc") if pid.isdigit() and str(tmp_path).encode() in _cmdline(pid)]
    assert left == []


def _cmdline(pid: str) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""
