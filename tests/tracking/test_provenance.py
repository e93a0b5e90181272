"""Provenance says the truth: the commit, and the tracked files modified since, leaving out what the
pipeline itself rewrites (dvc.lock, .dvc files), so a pristine clone is never recorded `-dirty`."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from segflow.tracking.provenance import UNKNOWN, describe_code, git_commit, git_state


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path) -> tuple[Path, str]:
    git(tmp_path, "init", "-q")
    git(tmp_path, "config", "user.email", "t@segflow.invalid")
    git(tmp_path, "config", "user.name", "t")
    for name in ("dvc.lock", "data.dvc", "params.yaml", "src.py"):
        (tmp_path / name).write_text("v1\n")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-qm", "one")
    return tmp_path, git(tmp_path, "rev-parse", "HEAD")


def test_the_pipelines_own_writes_leave_a_clone_clean(repo):
    root, head = repo
    (root / "dvc.lock").write_text("v2\n")  # every dvc repro rewrites it
    (root / "data.dvc").write_text("v2\n")  # segflow fetch-data
    (root / "untracked.txt").write_text("x")
    assert git_state(root) == (head, []) and git_commit(root) == head


def test_a_modified_tracked_file_is_named_and_marks_the_commit_dirty(repo):
    root, head = repo
    (root / "params.yaml").write_text("v2\n")
    (root / "src.py").write_text("v2\n")
    git(root, "add", "src.py")  # staged changes count too
    assert git_state(root) == (head, ["params.yaml", "src.py"]) and git_commit(root) == f"{head}-dirty"
    record = {"git_commit": git_commit(root), "git_modified": git_state(root)[1]}
    assert describe_code(record) == f"commit {head}, modified: params.yaml, src.py"


def test_outside_git_it_is_unknown(tmp_path):
    assert git_state(tmp_path) == (UNKNOWN, None) and git_commit(tmp_path) == UNKNOWN
    assert describe_code({"git_commit": "abc-dirty"}) == "commit abc-dirty"  # a record from before the list
