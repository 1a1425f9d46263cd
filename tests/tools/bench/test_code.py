"""Whose code the services run: another version's twopc is checked, before anything
starts, to take every subcommand and option the bench starts services with; a version
from before the locks runs on this environment's packages, said so."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from compose.localcluster import LocalCluster
from tools.bench._code import ServiceCode, build_ref, check_command_line
from tools.bench._resources import BenchSetupError

ROOT = Path(__file__).resolve().parents[3]

#: A stand-in twopc whose --help names only some options of some subcommands.
_FAKE_TWOPC = """
import sys
helps = {"serve": "Usage: twopc serve --config PATH", "mockqueue serve": "--name  --port  --data-dir"}
words = " ".join(arg for arg in sys.argv[1:] if arg != "--help")
if words not in helps:
    sys.exit(f"No such command '{words}'.")
print(helps[words])
"""
FAKE = ServiceCode("old (0000000)", (sys.executable, "-c", _FAKE_TWOPC))


def test_command_lines_whose_options_the_versions_help_names_pass() -> None:
    check_command_line(FAKE, [[*FAKE.command, "serve", "--config", "c.toml"], [*FAKE.command, "mockqueue", "serve"]])


def test_an_option_the_version_lacks_is_named_in_the_error() -> None:
    # --data is not --data-dir: a name is matched whole.
    argv = [*FAKE.command, "mockqueue", "serve", "--name", "q", "--port", "1", "--data", "d", "--secret=s"]

    with pytest.raises(BenchSetupError, match=r"old \(0000000\)'s `twopc mockqueue serve` has no --data, --secret:"):
        check_command_line(FAKE, [argv])


def test_a_subcommand_the_version_lacks_is_a_clear_error_with_what_it_said() -> None:
    with pytest.raises(BenchSetupError, match=r"cannot run `twopc bank serve`(.|\n)*No such command 'bank serve'"):
        check_command_line(FAKE, [[*FAKE.command, "bank", "serve", "--dsn", "x"]])


def test_this_checkouts_own_twopc_takes_what_a_local_cluster_starts_it_with(tmp_path: Path) -> None:
    code = ServiceCode("here", (sys.executable, "-P", "-m", "tools.cli"), {"PYTHONPATH": str(ROOT)})
    cluster = LocalCluster(tmp_path, queues=("queue-a",), command=code.command, env=code.env)
    argvs = [node.argv for node in cluster.nodes.values()]

    check_command_line(code, argvs)
    with pytest.raises(BenchSetupError, match=r"`twopc serve` has no --no-such-option:"):
        check_command_line(code, [*argvs, [*code.command, "serve", "--no-such-option"]])


def _repository(where: Path, files: dict[str, str]) -> Path:
    """A repository of one commit holding ``files`` (path: text)."""
    where.mkdir()
    for name, text in files.items():
        (where / name).parent.mkdir(parents=True, exist_ok=True)
        (where / name).write_text(text)
    identity = ["-c", "user.name=bench test", "-c", "user.email=bench@test.invalid", "-c", "commit.gpgsign=false"]
    for args in (["init", "--quiet"], ["add", "."], ["commit", "--quiet", "-m", "one"]):
        subprocess.run(["git", "-C", str(where), *identity, *args], check=True, capture_output=True)
    return where


def test_a_ref_without_a_lock_runs_its_tree_on_this_environments_packages(tmp_path: Path) -> None:
    repo = _repository(tmp_path / "repo", {"tools/cli/__main__.py": "", "tools/__init__.py": ""})
    lines: list[str] = []

    code = build_ref("HEAD", tmp_path / "ref", lines.append, repository=repo)

    assert code.command == (sys.executable, "-P", "-m", "tools.cli")
    assert code.env == {"PYTHONPATH": str(tmp_path / "ref" / "tree")}
    assert (tmp_path / "ref" / "tree" / "tools" / "cli" / "__main__.py").is_file()
    assert not (tmp_path / "ref" / "venv").exists()
    assert "no requirements.lock" in code.packages
    assert any("has no requirements.lock" in line for line in lines)


def test_a_ref_older_than_the_tools_cli_layout_is_refused_before_any_venv_is_built(tmp_path: Path) -> None:
    """Else this environment's own install would answer for the tools.cli the ref lacks."""
    repo = _repository(tmp_path / "repo", {"twopc/cli/__main__.py": "", "requirements.lock": ""})

    with pytest.raises(BenchSetupError, match=r"HEAD \(\w+\) has no tools/cli/__main__.py"):
        build_ref("HEAD", tmp_path / "ref", print, repository=repo)
    assert not (tmp_path / "ref" / "venv").exists()
