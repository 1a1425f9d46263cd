"""The shipped scenarios: they load, and together they strike at every failpoint."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from chaos import list_scenarios, load_scenario

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
    assert in_code - covered == set()


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
