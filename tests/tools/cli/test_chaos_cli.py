"""``twopc chaos suite``: every scenario gets a verdict, even one whose run cannot finish."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import chaos
from chaos import PipelineScenario, RunResult, Scenario
from tools.cli._app import app


def scenario(name: str) -> Scenario:
    return Scenario.model_validate(
        {
            "name": name,
            "description": "a scenario of the test",
            "participants": [{"kind": "mockqueue", "name": "queue-a"}],
            "nemesis": [{"kind": "kill", "target": "coordinator"}],
        }
    )


def test_a_run_that_raises_is_a_failed_verdict_and_the_suite_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[str] = []

    def run_scenario(s: Scenario, seed: int, *args: Any, **kwargs: Any) -> RunResult:
        ran.append(s.name)
        if s.name == "first":
            raise TimeoutError("the checker's read timed out")
        report = {"violations": [], "faults_injected": 1, "transactions": {"committed": 5}, "recovery_seconds": [0.5]}
        return RunResult(report)

    monkeypatch.setattr(chaos, "list_scenarios", lambda: [scenario("first"), scenario("second")])
    monkeypatch.setattr(chaos, "list_pipeline_scenarios", list)
    monkeypatch.setattr(chaos, "run_scenario", run_scenario)
    result = CliRunner().invoke(app, ["chaos", "suite", "--seeds", "1"])
    assert ran == ["first", "second"]
    assert result.exit_code == 1
    assert "error: TimeoutError" in result.stdout and "ok" in result.stdout
    assert "the checker's read timed out" in result.stderr


def test_the_suite_passes_when_every_run_is_clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean = {"violations": [], "faults_injected": 1, "transactions": {"committed": 5}, "recovery_seconds": []}
    monkeypatch.setattr(chaos, "list_scenarios", lambda: [scenario("only")])
    monkeypatch.setattr(chaos, "list_pipeline_scenarios", list)
    monkeypatch.setattr(chaos, "run_scenario", lambda *args, **kwargs: RunResult(clean))
    result = CliRunner().invoke(app, ["chaos", "suite", "--seeds", "1,2"])
    assert result.exit_code == 0, result.stdout


def pipeline_scenario(name: str, broken: bool = False) -> PipelineScenario:
    return PipelineScenario.model_validate(
        {
            "name": name,
            "description": "a pipeline scenario of the test",
            "nemesis": [{"kind": "kill"}],
            "broken_build": broken,
        }
    )


def test_the_suite_runs_the_pipeline_scenarios_and_needs_their_broken_build_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ran: list[tuple[str, int]] = []

    def run_pipeline_scenario(s: PipelineScenario, seed: int, *args: Any, **kwargs: Any) -> RunResult:
        ran.append((s.name, seed))
        violations = ["3 events took effect more than once in the ledger"] if s.broken_build else []
        return RunResult(
            {
                "violations": violations,
                "faults_injected": 2,
                "transactions": {"committed": 9},
                "recovery_seconds": [0.1],
            }
        )

    monkeypatch.setattr(chaos, "list_scenarios", list)
    monkeypatch.setattr(
        chaos, "list_pipeline_scenarios", lambda: [pipeline_scenario("kill"), pipeline_scenario("broken", True)]
    )
    monkeypatch.setattr(chaos, "run_pipeline_scenario", run_pipeline_scenario)
    result = CliRunner().invoke(app, ["chaos", "suite", "--seeds", "1,2"])
    assert ran == [("kill", 1), ("kill", 2), ("broken", 1), ("broken", 2)]
    assert result.exit_code == 0, result.stdout
    assert "caught" in result.stdout
