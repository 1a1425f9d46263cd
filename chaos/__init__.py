"""Chaos: kill, pause and cut off real twopc processes mid-commit, then prove that nothing
was lost or duplicated.

A scenario (a TOML file in ``chaos/scenarios``) names a topology, a workload, a nemesis
schedule, a duration, a seed and the invariants to check. ``twopc chaos run NAME`` starts
real processes on loopback, runs the workload while the nemeses strike, stops the faults,
lets the system settle and checks every invariant; the report counts transactions by
outcome, faults injected, recovery times and violations (which must be none).
"""

from chaos.runner import RunResult, run_scenario
from chaos.scenario import Scenario, list_scenarios, load_scenario

__all__ = ["RunResult", "Scenario", "list_scenarios", "load_scenario", "run_scenario"]
