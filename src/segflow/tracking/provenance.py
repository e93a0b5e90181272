"""Where a result came from: the git commit of the code (and the tracked files modified since),
and the DVC hash of the raw data.

Recorded with every W&B run (config) and every registry entry, so a number can be traced back
to the exact code and data that produced it.
"""

from __future__ import annotations

import fnmatch
import subprocess
from pathlib import Path

import yaml

UNKNOWN = "unknown"


# Tracked files the pipeline itself rewrites: DVC's lock file after every repro, and .dvc files
# when data is fetched. Their changes say nothing about the code that made a result.
PIPELINE_WRITTEN = ("dvc.lock", "*.dvc")


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()


def git_state(root: Path) -> tuple[str, list[str] | None]:
    """(HEAD commit, tracked files that differ from it, the pipeline's own writes left out);
    ('unknown', None) outside git."""
    try:
        head = _git(root, "rev-parse", "HEAD")
        changed = _git(root, "diff", "--name-only", "HEAD", "--").splitlines() if head else []
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN, None
    if not head:
        return UNKNOWN, None
    return head, [p for p in changed if not any(fnmatch.fnmatch(p, pattern) for pattern in PIPELINE_WRITTEN)]


def git_commit(root: Path) -> str:
    """HEAD commit, with '-dirty' when a tracked file other than the pipeline's own writes differs
    from it (git_state lists them); 'unknown' outside git."""
    head, modified = git_state(root)
    return f"{head}{'-dirty' if modified else ''}"


def describe_code(record: dict) -> str:
    """'commit <sha>, modified: a, b' from a record's git_commit and git_modified (records from
    before the list was kept: the commit as recorded)."""
    commit, modified = record.get("git_commit"), record.get("git_modified")
    if modified is None:
        return f"commit {commit or UNKNOWN}"
    sha = str(commit).removesuffix("-dirty")
    return f"commit {sha}, " + (f"modified: {', '.join(modified)}" if modified else "no tracked file modified")


def data_hash(root: Path) -> str:
    """The md5 DVC recorded for the raw data (data.dvc); 'unknown' when there is none."""
    try:
        outs = yaml.safe_load((root / "data.dvc").read_text())["outs"]
        return str(outs[0]["md5"])
    except (OSError, KeyError, IndexError, TypeError, yaml.YAMLError):
        return UNKNOWN
