"""Chaos: kill, pause and cut off real twopc processes mid-commit, then prove that nothing
was lost or duplicated.

A scenario (a TOML file in ``chaos/scenarios``) names a topology, a workload, a nemesis
schedule, a duration, a seed and the invariants to check. ``twopc chaos run NAME`` starts
real processes on loopback, runs the workload while the nemeses strike, stops the faults,
lets the system settle and checks every invariant; the report counts transactions by
outcome, faults injected, recovery times and violations (which must be none).

The pipeline scenarios (``chaos/scenarios/pipeline``) strike the consume → process →
produce example instead, while a producer keeps writing its input
(:mod:`chaos.pipeline_run`).
"""

from chaos.pipeline_run import (
    PipelineScenario,
    list_pipeline_scenarios,
    load_pipeline_scenario,
    run_pipeline_scenario,
)
from chaos.runner import RunResult, run_scenario
from chaos.scenario import Scenario, list_scenarios, load_scenario

__all__ = [
    "PipelineScenario",
    "RunResult",
    "Scenario",
    "list_pipeline_scenarios",
    "list_scenarios",
    "load_pipeline_scenario",
    "load_scenario",
    "run_pipeline_scenario",
    "run_scenario",
]
