"""The locked installs: every dependency pinned with hashes, the image's set the same
versions without the test tools, and the suite running on exactly the locked set.

A dependency added to pyproject.toml without `make lock` fails here, saying so."""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
IMAGE_LOCK = ROOT / "requirements-image.lock"
RELOCK = "pyproject.toml changed: run `make lock`"


def pins(lock: Path) -> dict[str, Requirement]:
    """The lock's requirements by canonical name; each must be one exact version with hashes."""
    pinned = {}
    for entry in lock.read_text().replace("\\\n", " ").splitlines():
        entry = entry.strip()
        if not entry or entry.startswith("#"):
            continue
        requirement_text, _, hashes = entry.partition(" --hash=")
        requirement = Requirement(requirement_text.strip())
        assert hashes.startswith("sha256:"), f"{lock.name}: {requirement.name} has no hash"
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", f"{lock.name}: {requirement} is not one version"
        pinned[canonicalize_name(requirement.name)] = requirement
    return pinned


def version(requirement: Requirement) -> str:
    return next(iter(requirement.specifier)).version


def declared(*extras: str) -> list[Requirement]:
    """pyproject.toml's requirements of the core and of ``extras`` (``all`` names the others)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(text) for text in project["dependencies"]]
    for extra in extras:
        requirements += [
            Requirement(text) for text in project["optional-dependencies"][extra] if not text.startswith("twopc[")
        ]
    return requirements


def test_every_declared_dependency_is_locked_at_a_version_it_allows() -> None:
    locked = pins(LOCK)
    for requirement in declared("postgres", "kafka", "cli", "test"):
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement.name} is not in {LOCK.name}; {RELOCK}"
        assert requirement.specifier.contains(version(locked[name])), f"{locked[name]} breaks {requirement}; {RELOCK}"


def test_the_image_lock_pins_the_same_versions_without_the_test_tools() -> None:
    locked, image = pins(LOCK), pins(IMAGE_LOCK)
    for requirement in declared("postgres", "kafka", "cli"):
        assert canonicalize_name(requirement.name) in image, f"{requirement.name} is not in {IMAGE_LOCK.name}; {RELOCK}"
    for name, requirement in image.items():
        assert name in locked and version(locked[name]) == version(requirement), f"{requirement}; {RELOCK}"
    assert not {"pytest", "mypy", "playwright"} & image.keys()


@pytest.mark.parametrize("lock", [LOCK, IMAGE_LOCK], ids=lambda path: path.name)
def test_a_lock_says_how_it_is_made_again(lock: Path) -> None:
    assert "make lock" in lock.read_text().split("\n", 3)[1]


def test_the_suite_runs_on_the_locked_versions() -> None:
    """What `make setup` installed is the lock, so two setups install the same set."""
    wrong = {}
    for name, requirement in pins(LOCK).items():
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue  # another platform's or another Python's
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed != version(requirement):
            wrong[name] = (version(requirement), installed)
    assert not wrong, f"installed differs from {LOCK.name} (locked, installed): {wrong}; run `make setup`"
