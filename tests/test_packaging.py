"""What each install brings: the core for the coordinator and the SDK, extras for the rest."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: The distributions behind each extra, by the module they install.
EXTRA_MODULES = {
    "postgres": ["psycopg"],
    "kafka": ["aiokafka"],
    "cli": ["typer", "rich", "matplotlib"],
    "asgi": ["starlette", "uvicorn", "fastapi"],
}


def project() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def requirement_names(requirements: list[str]) -> set[str]:
    names = set()
    for requirement in requirements:
        name = requirement.split(";")[0].split("[")[0]
        for mark in "<>=!~ ":
            name = name.split(mark)[0]
        names.add(name.lower())
    return names


def runs_without(statement: str, missing: list[str]) -> subprocess.CompletedProcess[str]:
    """Run ``statement`` in a fresh interpreter in which ``missing`` cannot be imported,
    as if they were not installed."""
    script = f"import sys\nfor name in {missing!r}: sys.modules[name] = None\n{statement}\n"
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)


def all_but(*extras: str) -> list[str]:
    return sorted(m for extra, modules in EXTRA_MODULES.items() if extra not in extras for m in modules)


def test_the_core_install_has_none_of_the_extras_packages() -> None:
    dependencies = project()["dependencies"]
    assert isinstance(dependencies, list)
    core = requirement_names(dependencies)
    for extra, modules in EXTRA_MODULES.items():
        assert not core & set(modules), f"the core install pulls in {core & set(modules)} of [{extra}]"


def test_each_adapter_and_the_command_line_have_an_extra_and_all_has_every_one() -> None:
    extras = project()["optional-dependencies"]
    assert isinstance(extras, dict)
    for extra, modules in EXTRA_MODULES.items():
        assert set(modules) <= requirement_names(extras[extra]), f"[{extra}] lacks {modules}"
    assert extras["all"] == ["twopc[postgres,kafka,cli,asgi]"]


def test_the_sdk_and_the_coordinator_run_on_the_core_install_alone() -> None:
    # The ASGI mount included: it is plain ASGI, no framework needed to build it.
    statement = (
        "import participant_sdk, participant_sdk.testing, participant_sdk._asgi, coordinator.api, adapters.mockqueue"
    )
    result = runs_without(statement, all_but())
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("adapter", ["postgres", "kafka"])
def test_an_adapter_needs_only_its_own_extra(adapter: str) -> None:
    result = runs_without(f"import adapters.{adapter}", all_but(adapter))
    assert result.returncode == 0, result.stderr


def test_the_checks_notice_a_missing_package() -> None:
    assert runs_without("import adapters.kafka", ["aiokafka"]).returncode != 0


def test_the_command_without_the_cli_extra_says_what_to_install() -> None:
    result = runs_without("from tools.cli import main\nmain()", ["typer"])
    assert result.returncode == 1
    assert "pip install 'twopc[cli]'" in result.stderr and "Traceback" not in result.stderr
