"""The Dockerfile, read without a Docker engine: what it installs, as whom, how it is
checked and started, and that the build context holds what it copies and no secrets."""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions, (KEYWORD, arguments), continuation lines joined."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, arguments = line.partition(" ")
            found.append((keyword.upper(), arguments.strip()))
    return found


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


def ignored(path: str) -> bool:
    """Whether .dockerignore leaves ``path`` out of the build context (its rules in
    order, the last match winning, as Docker reads them; enough for these patterns)."""
    verdict = False
    for rule in (ROOT / ".dockerignore").read_text().splitlines():
        rule = rule.strip()
        if not rule or rule.startswith("#"):
            continue
        keep = rule.startswith("!")
        pattern = rule.lstrip("!").rstrip("/")
        candidates = [path] + [str(parent) for parent in Path(path).parents if str(parent) != "."]
        if any(fnmatch.fnmatch(c, pattern) or fnmatch.fnmatch(c, pattern.replace("**/", "")) for c in candidates):
            verdict = not keep
    return verdict


def test_two_stages_on_the_slim_python_3_11_base() -> None:
    bases = [arguments.split()[0] for keyword, arguments in instructions() if keyword == "FROM"]
    assert len(bases) == 2
    (default_base,) = [a for k, a in instructions() if k == "ARG" and a.startswith("PYTHON_IMAGE=")]
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.11-slim(-\w+)?", default_base)


def test_it_installs_the_image_lock_with_hashes_required_and_twopc_without_its_dependencies() -> None:
    runs = [arguments for keyword, arguments in instructions() if keyword == "RUN"]
    assert any("--require-hashes" in run and "-r /src/requirements-image.lock" in run for run in runs)
    assert any(run.endswith("pip install --no-deps /src") for run in runs)


def test_it_copies_every_package_the_distribution_has() -> None:
    copies = [arguments.split() for keyword, arguments in instructions() if keyword == "COPY"]
    copied = {source for words in copies if "--from=build" not in words for source in words[:-1]}
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert {name.rstrip("*") for name in packages["include"]} <= copied


def test_the_final_stage_runs_twopc_as_a_user_that_is_not_root_and_checks_its_health() -> None:
    stage = dict(final_stage())
    assert stage["USER"].split(":")[0] not in ("root", "0")
    assert json.loads(stage["ENTRYPOINT"]) == ["twopc"]
    health = stage["HEALTHCHECK"]
    assert json.loads(health.split("CMD", 1)[1]) == ["python", "-m", "compose.healthcheck"]


def test_the_build_context_has_what_the_dockerfile_copies_and_no_secrets() -> None:
    for keyword, arguments in instructions():
        if keyword == "COPY" and "--from" not in arguments:
            for source in arguments.split()[:-1]:
                assert (ROOT / source).exists(), source
                assert not ignored(source), f".dockerignore leaves out {source}, which the Dockerfile copies"
    for secret in ("compose/.env", "compose/secrets/metrics.token", ".venv/bin/python", "var/dev/services.json"):
        assert ignored(secret), f"{secret} would be sent to the image build"
    assert not ignored("adapters/postgres/bank.py")
