"""The venv another version's services run in: what its lock pins, hashes required,
built with the uv the Makefile pins."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from tools.bench._resources import BenchSetupError
from tools.bench._venv import UV_VERSION, locked_venv, uv_command

ROOT = Path(__file__).resolve().parents[3]


def test_the_uv_bootstrapped_is_the_version_the_makefile_pins() -> None:
    pinned = re.search(r"^UV_VERSION\s*:?=\s*(\S+)", (ROOT / "Makefile").read_text(), re.MULTILINE)

    assert pinned is not None and pinned.group(1) == UV_VERSION


def test_a_lock_without_hashes_is_refused_with_the_installers_reason(tmp_path: Path) -> None:
    lock = tmp_path / "requirements.lock"
    lock.write_text("six==1.16.0\n")
    lines: list[str] = []

    with pytest.raises(BenchSetupError, match=r"could not install requirements.lock(.|\n)*hash"):
        locked_venv(lock, tmp_path / "venv", lines.append)


def _executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_the_uv_beside_the_interpreter_comes_before_the_one_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    beside = _executable(tmp_path / "venv" / "bin" / "uv")
    _executable(tmp_path / "path" / "uv")
    monkeypatch.setattr(sys, "executable", str(tmp_path / "venv" / "bin" / "python"))
    monkeypatch.setenv("PATH", str(tmp_path / "path"))

    assert uv_command(print, tmp_path / "tools") == str(beside)


def test_without_uv_here_the_one_installed_before_into_the_tools_directory_is_used_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    installed = _executable(tmp_path / "tools" / "bin" / "uv")
    monkeypatch.setattr(sys, "executable", str(tmp_path / "venv" / "bin" / "python"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    lines: list[str] = []

    assert uv_command(lines.append, tmp_path / "tools") == str(installed)
    assert lines == []  # nothing installed this time
