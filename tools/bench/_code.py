"""Whose code the coordinator and participant services run: this checkout's, or another
version's (``--compare-ref``), exported from git and run by a venv of its own, so that
two versions are measured side by side in one invocation. The load generator is always
this checkout's.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tools.bench._git import Commit, checkout_root, export_tree, resolve_ref
from tools.bench._resources import BenchSetupError
from tools.bench._venv import locked_venv
from tools.bench._workload import Progress

__all__ = ["THIS_CHECKOUT", "ServiceCode", "build_ref", "check_command_line"]

#: Wide enough that no option name in a --help is wrapped or cut.
_HELP_ENV = {"COLUMNS": "400", "NO_COLOR": "1", "TERM": "dumb"}
_HELP_TIMEOUT = 60.0
#: What ``python -m tools.cli`` runs, in a ref's tree.
_ENTRY_POINT = "tools/cli/__main__.py"


@dataclass(frozen=True)
class ServiceCode:
    #: How the report names it: ``this checkout``, ``HEAD~1 (1a2b3c4)``.
    label: str = "this checkout"
    #: What runs twopc for every service, and its environment; empty: the ``twopc``
    #: command beside this interpreter.
    command: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict, hash=False)
    #: Where its packages come from, for the report.
    packages: str = "this environment's"
    #: The commit it was exported from (None: this checkout, as it is on disk).
    commit: Commit | None = None


THIS_CHECKOUT = ServiceCode()


def build_ref(ref: str, into: Path, progress: Progress, repository: Path | None = None) -> ServiceCode:
    """``ref``'s code, ready to run its services: its tree exported to ``into/tree`` and,
    when it has a ``requirements.lock``, a venv with exactly that at ``into/venv``; else
    (a version from before the locks) this environment's packages, said so. Everything
    is under ``into``: removing it removes the lot. ``ref`` is looked up in
    ``repository`` (default: the git checkout this code runs from)."""
    root = repository or checkout_root()
    commit = resolve_ref(ref, root)
    progress(f"--compare-ref: exporting {commit.ref} ({commit.sha}) from {root} ...")
    tree = export_tree(commit, root, into / "tree")
    # Checked here, not left to the interpreter: with this environment's packages (below),
    # a tools.cli missing from the tree would be found in this checkout's own install.
    if not (tree / _ENTRY_POINT).is_file():
        raise BenchSetupError(
            f"{commit.label} has no {_ENTRY_POINT}: its services cannot be started as `python -m tools.cli`, "
            "as this bench starts them (it is older than that layout); compare with a later ref"
        )
    lock = tree / "requirements.lock"
    if lock.is_file():
        progress(f"--compare-ref: a venv for {commit.label} with its requirements.lock (hashes required) ...")
        started = time.monotonic()
        python = locked_venv(lock, into / "venv", progress)
        progress(f"--compare-ref: the venv is ready ({time.monotonic() - started:.1f} s)")
        packages = "its requirements.lock"
    else:
        progress(
            f"--compare-ref: {commit.label} has no requirements.lock (it predates the pinned installs): "
            "its services run on this environment's packages"
        )
        python = Path(sys.executable)
        packages = "this environment's: it has no requirements.lock"
    # -P: `python -m` would otherwise put the working directory, maybe this checkout,
    # first on sys.path; PYTHONPATH replaces, not extends, this process's.
    command = (str(python), "-P", "-m", "tools.cli")
    return ServiceCode(commit.label, command, {"PYTHONPATH": str(tree)}, packages, commit)


def check_command_line(code: ServiceCode, argvs: Iterable[Sequence[str]]) -> None:
    """Fail clearly, before its services start, when ``code``'s twopc lacks a subcommand or
    an option these command lines use (another version's may be older): each subcommand's
    ``--help`` must name every option given to it."""
    wanted: dict[tuple[str, ...], set[str]] = {}
    for argv in argvs:
        args = list(argv[len(code.command) :])
        words = tuple(itertools.takewhile(lambda arg: not arg.startswith("-"), args))
        wanted.setdefault(words, set()).update(arg.split("=", 1)[0] for arg in args if arg.startswith("--"))
    for words, options in wanted.items():
        command = f"`twopc {' '.join(words)}`"
        try:
            helped = subprocess.run(
                [*code.command, *words, "--help"],
                capture_output=True,
                text=True,
                env={**os.environ, **code.env, **_HELP_ENV},
                stdin=subprocess.DEVNULL,
                timeout=_HELP_TIMEOUT,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BenchSetupError(f"{code.label}: could not run {command} --help: {exc}") from None
        if helped.returncode != 0:
            said = "\n".join((helped.stderr or helped.stdout).strip().splitlines()[-10:])
            raise BenchSetupError(
                f"{code.label} cannot run {command} as this checkout's bench starts it "
                f"(--help exited with {helped.returncode}):\n{said}"
            )
        missing = sorted(option for option in options if not _names(helped.stdout, option))
        if missing:
            raise BenchSetupError(
                f"{code.label}'s {command} has no {', '.join(missing)}: its command line is older than the one "
                "this checkout's bench starts services with; compare with a later ref"
            )


def _names(help_text: str, option: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", help_text) is not None
