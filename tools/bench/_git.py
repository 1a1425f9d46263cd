"""Another version of this checkout's code, by git ref: which commit a name means, and
its tree exported to a directory of its own (``git archive``, so that the repository's
worktrees and index are left as they were)."""

from __future__ import annotations

import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from tools.bench._resources import BenchSetupError

__all__ = ["Commit", "checkout_root", "export_tree", "resolve_ref"]


@dataclass(frozen=True)
class Commit:
    #: The name it was asked by (``HEAD~1``, a tag, a sha).
    ref: str
    sha: str
    short: str

    @property
    def label(self) -> str:
        """How the report names it: ``HEAD~1 (1a2b3c4)``, or the short sha alone when it
        was asked by its sha."""
        return self.short if self.sha.startswith(self.ref.lower()) else f"{self.ref} ({self.short})"


def checkout_root() -> Path:
    """The top of the git checkout this code runs from (whose refs ``--compare-ref`` names)."""
    source = Path(__file__).resolve().parent
    return Path(_git(source, "rev-parse", "--show-toplevel", what="find the git checkout this code runs from"))


def resolve_ref(ref: str, root: Path) -> Commit:
    """The commit ``ref`` names in the repository at ``root``; a clear error when none."""
    if not ref.strip():
        raise BenchSetupError("--compare-ref needs a git ref: a branch, a tag, HEAD~3, a commit's sha")
    # --end-of-options: a ref that looks like an option is a name, not an option.
    found = _run_git(root, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}")
    if found.returncode not in (0, 1):  # 1 is "no such commit"; the rest, no repository at all
        raise BenchSetupError(f"--compare-ref needs a git repository, and {root} is none: {found.stderr.strip()}")
    if found.returncode != 0:
        raise BenchSetupError(
            f"--compare-ref {ref!r}: no such commit in {root} "
            "(any name `git rev-parse` accepts: a branch, a tag, HEAD~3, a commit's sha)"
        )
    sha = found.stdout.strip()
    short = _git(root, "rev-parse", "--short", sha, what=f"shorten {sha}")
    return Commit(ref, sha, short)


def export_tree(commit: Commit, root: Path, into: Path) -> Path:
    """The commit's files, as committed, in ``into`` (made here)."""
    into.mkdir(parents=True)
    failure = ""
    with subprocess.Popen(
        ["git", "-C", str(root), "archive", "--format=tar", commit.sha],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as archive:
        assert archive.stdout is not None and archive.stderr is not None
        try:
            with tarfile.open(fileobj=archive.stdout, mode="r|") as tar:
                tar.extractall(into, filter="data")
        except tarfile.TarError as exc:
            failure = str(exc)
        said = archive.stderr.read().decode(errors="replace").strip()
    if archive.returncode != 0:
        raise BenchSetupError(f"could not export {commit.label}: git archive said {said!r}")
    if failure:
        raise BenchSetupError(f"could not export {commit.label}: {failure}")
    return into


def _git(where: Path, *args: str, what: str) -> str:
    done = _run_git(where, *args)
    if done.returncode != 0:
        raise BenchSetupError(f"--compare-ref could not {what} ({where}): {done.stderr.strip()}")
    return done.stdout.strip()


def _run_git(where: Path, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True)
    except FileNotFoundError:
        raise BenchSetupError("--compare-ref needs git, which is not installed") from None
