"""The shipped scenarios: they load, and together they strike at every failpoint."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from chaos import Scenario, list_pipeline_scenarios, list_scenarios, load_pipeline_scenario, load_scenario
from chaos.pipeline_run import PipelineNemesisSpec

ROOT = Path(__file__).resolve().parents[2]


def failpoints_in_the_code() -> set[str]:
    """Every failpoint the coordinator, the SDK and the adapters pass."""
    names: set[str] = set()
    for package in ("coordinator", "participant_sdk", "adapters"):
        for path in (ROOT / package).rglob("*.py"):
            names.update(re.findall(r'failpoints\.hit\("([a-z_.]+)"\)', path.read_text()))
    return names


def test_every_shipped_scenario_loads_and_there_are_at_least_twelve() -> None:
    real = [s for s in list_scenarios() if not s.broken_build]
    assert len(real) >= 12
    assert len({s.name for s in real}) == len(real)


def test_the_scenarios_cover_every_failpoint_in_the_code() -> None:
    in_code = failpoints_in_the_code()
    assert len(in_code) >= 11  # the search itself works
    covered = {n.failpoint for s in list_scenarios() if not s.broken_build for n in s.nemesis if n.failpoint}
    covered |= {n.failpoint for s in list_pipeline_scenarios() if not s.broken_build for n in s.nemesis if n.failpoint}
    assert in_code - covered == set()


def test_the_failpoints_named_in_scenarios_exist_in_the_code() -> None:
    sources = "".join(
        p.read_text() for root in ("coordinator", "participant_sdk", "adapters") for p in Path(root).rglob("*.py")
    )
    for scenario in [*list_scenarios(), *list_pipeline_scenarios()]:
        for nemesis in scenario.nemesis:
            if nemesis.failpoint:
                assert f'"{nemesis.failpoint}"' in sources, f"{scenario.name}: no failpoint {nemesis.failpoint}"


def test_an_unknown_scenario_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="kill-coordinator"):
        load_scenario("no-such-scenario")


def test_a_scenario_with_a_crash_nemesis_needs_its_failpoint(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        'name = "bad"\ndescription = "x"\n[[participants]]\nkind = "mockqueue"\nname = "q"\n'
        '[[nemesis]]\nkind = "crash-at-failpoint"\ntarget = "coordinator"\n'
    )
    with pytest.raises(ValidationError, match="needs a failpoint"):
        load_scenario(path)


def minimal(**fields: object) -> dict[str, object]:
    return {
        "name": "s",
        "description": "x",
        "participants": [{"kind": "mockqueue", "name": "q"}],
        "nemesis": [{"kind": "kill", "target": "coordinator"}],
        **fields,
    }


def test_several_replicas_need_the_shared_log() -> None:
    with pytest.raises(ValidationError, match="several replicas need the shared log"):
        Scenario.model_validate(minimal(cluster={"replicas": 3}))
    assert Scenario.model_validate(minimal(cluster={"replicas": 3, "log": "postgres"})).cluster.shared


def test_a_broken_build_scenario_must_switch_an_unsafe_setting_on() -> None:
    with pytest.raises(ValidationError, match="must switch on an unsafe_"):
        Scenario.model_validate(minimal(broken_build=True))


def test_an_unsafe_setting_is_refused_outside_a_broken_build_scenario() -> None:
    with pytest.raises(ValidationError, match=r"log\.unsafe_unfenced_decisions only in a scenario with broken_build"):
        Scenario.model_validate(minimal(coordinator={"log": {"unsafe_unfenced_decisions": True}}))


def test_the_fixed_twin_of_a_broken_build_keeps_everything_but_the_break() -> None:
    broken = load_scenario("broken-build-unfenced-zombie")
    fixed = broken.fixed()
    assert broken.unsafe_settings == ["log.unsafe_unfenced_decisions"]
    assert fixed.unsafe_settings == [] and not fixed.broken_build
    assert fixed.coordinator["transactions"] == broken.coordinator["transactions"]


def test_the_unfenced_broken_build_is_replica_zombie_with_one_switch() -> None:
    # The catch proves something only if the correct build passes the very same run.
    zombie = load_scenario("replica-zombie")
    broken = load_scenario("broken-build-unfenced-zombie").fixed()
    differs = {"name", "description"}
    assert broken.model_dump(exclude=differs) == zombie.model_dump(exclude=differs) | {
        "coordinator": {**zombie.coordinator, "log": {}}
    }


@pytest.mark.parametrize("name", ["replica-kill", "replica-zombie", "log-restart", "replica-partition"])
def test_the_replica_scenarios_run_three_replicas_over_the_postgresql_log(name: str) -> None:
    cluster = load_scenario(name).cluster
    assert (cluster.replicas, cluster.log) == (3, "postgres")


def test_a_delay_is_a_fault_of_the_mock_queue_only() -> None:
    with pytest.raises(ValidationError, match="delay_ms is a fault of the mock queue only"):
        Scenario.model_validate(minimal(participants=[{"kind": "events", "name": "e", "delay_ms": 5}]))


def test_the_pipeline_scenarios_kill_rebalance_and_prove_their_checker() -> None:
    scenarios = {s.name: s for s in list_pipeline_scenarios()}
    assert {"pipeline-kill", "pipeline-rebalance"} <= set(scenarios)
    assert scenarios["pipeline-kill"].nemesis[0].targets == ["pipeline", "coordinator", "bank", "events"]
    assert any(s.broken_build for s in scenarios.values())


def test_an_unknown_pipeline_scenario_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="pipeline-kill"):
        load_pipeline_scenario("no-such-scenario")


def test_a_pipeline_crash_needs_its_failpoint_and_only_it_takes_one() -> None:
    with pytest.raises(ValidationError, match="needs a failpoint"):
        PipelineNemesisSpec(kind="crash-at-failpoint")
    with pytest.raises(ValidationError, match="needs a failpoint"):
        PipelineNemesisSpec(kind="kill", failpoint="source.after_commit")
    with pytest.raises(ValidationError):
        PipelineNemesisSpec(kind="kill", targets=["somewhere"])  # type: ignore[list-item]
