"""Where a result came from: the git commit of the code and the DVC hash of the raw data.

Recorded with every W&B run (config) and every registry entry, so a number can be traced back
to the exact code and data that produced it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

UNKNOWN = "unknown"


def git_commit(root: Path) -> str:
    """HEAD commit, with '-dirty' when tracked files differ from it; 'unknown' outside git."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()

    try:
        head = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN
    return f"{head}{'-dirty' if dirty else ''}" if head else UNKNOWN


def data_hash(root: Path) -> str:
    """The md5 DVC recorded for the raw data (data.dvc); 'unknown' when there is none."""
    try:
        outs = yaml.safe_load((root / "data.dvc").read_text())["outs"]
        return str(outs[0]["md5"])
    except (OSError, KeyError, IndexError, TypeError, yaml.YAMLError):
        return UNKNOWN
