"""The shipped scenarios: they load, and together they strike at every failpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from chaos import list_scenarios, load_scenario

#: Every failpoint the coordinator and the participant SDK pass.
FAILPOINTS = {
    "coordinator.before_decision_logged",
    "coordinator.after_decision_logged",
    "coordinator.before_commit_sent",
    "coordinator.after_first_commit_sent",
    "participant.after_prepare_before_reply",
    "participant.before_commit_applied",
    "participant.after_commit_before_reply",
}


def test_every_shipped_scenario_loads_and_there_are_at_least_twelve() -> None:
    real = [s for s in list_scenarios() if not s.broken_build]
    assert len(real) >= 12
    assert len({s.name for s in real}) == len(real)


def test_the_scenarios_cover_every_failpoint() -> None:
    covered = {n.failpoint for s in list_scenarios() if not s.broken_build for n in s.nemesis if n.failpoint}
    assert covered >= FAILPOINTS


def test_the_failpoints_named_in_scenarios_exist_in_the_code() -> None:
    sources = "".join(
        p.read_text() for root in ("coordinator", "participant_sdk", "adapters") for p in Path(root).rglob("*.py")
    )
    for scenario in list_scenarios():
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
