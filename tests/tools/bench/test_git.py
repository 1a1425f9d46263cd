"""Another version of the code by git ref: a name resolves to its commit or fails saying
so, and the commit's files are exported as committed."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tools.bench._git import Commit, export_tree, resolve_ref
from tools.bench._resources import BenchSetupError


def git(repo: Path, *args: str) -> str:
    identity = ["-c", "user.name=bench test", "-c", "user.email=bench@test.invalid", "-c", "commit.gpgsign=false"]
    done = subprocess.run(["git", "-C", str(repo), *identity, *args], capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository of two commits: ``first`` (tagged ``v1``) and, on top, ``second``."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "--quiet")
    (repo / "file.txt").write_text("first\n")
    git(repo, "add", "file.txt")
    git(repo, "commit", "--quiet", "-m", "first")
    git(repo, "tag", "v1")
    (repo / "file.txt").write_text("second\n")
    git(repo, "commit", "--quiet", "-am", "second")
    return repo


def test_a_tag_and_a_relative_ref_resolve_to_the_same_commit(repo: Path) -> None:
    tagged, relative = resolve_ref("v1", repo), resolve_ref("HEAD~1", repo)

    assert tagged.sha == relative.sha == git(repo, "rev-parse", "v1")
    assert tagged.short == git(repo, "rev-parse", "--short", "v1")
    assert tagged.label == f"v1 ({tagged.short})"


def test_a_commit_asked_by_its_sha_is_labelled_by_its_short_sha_alone(repo: Path) -> None:
    sha = git(repo, "rev-parse", "HEAD")

    assert (
        resolve_ref(sha[:10], repo).label
        == resolve_ref(sha, repo).label
        == sha[: len(git(repo, "rev-parse", "--short", sha))]
    )


def test_an_unknown_ref_is_a_clear_error_naming_it(repo: Path) -> None:
    with pytest.raises(BenchSetupError, match=r"'no-such-branch': no such commit"):
        resolve_ref("no-such-branch", repo)


def test_a_ref_that_looks_like_an_option_is_looked_up_as_a_name(repo: Path) -> None:
    with pytest.raises(BenchSetupError, match=r"'--all': no such commit"):
        resolve_ref("--all", repo)


def test_an_empty_ref_is_refused() -> None:
    with pytest.raises(BenchSetupError, match="needs a git ref"):
        resolve_ref(" ", Path("."))


def test_a_directory_that_is_no_repository_is_said_to_be_none(tmp_path: Path) -> None:
    with pytest.raises(BenchSetupError, match="needs a git repository"):
        resolve_ref("HEAD", tmp_path)


def test_the_export_holds_the_commits_files_not_the_working_trees(repo: Path, tmp_path: Path) -> None:
    (repo / "file.txt").write_text("not committed\n")
    (repo / "untracked.txt").write_text("untracked\n")

    tree = export_tree(resolve_ref("v1", repo), repo, tmp_path / "export")

    assert sorted(path.name for path in tree.iterdir()) == ["file.txt"]
    assert (tree / "file.txt").read_text() == "first\n"


def test_exporting_a_commit_the_repository_lacks_fails_clearly(repo: Path, tmp_path: Path) -> None:
    missing = Commit("gone", "0" * 40, "0000000")

    with pytest.raises(BenchSetupError, match=r"could not export gone \(0000000\): git archive said .*0{40}"):
        export_tree(missing, repo, tmp_path / "export")
