"""Imported first by every flow file: segflow's environment (PREFECT_HOME inside the project,
analytics off, W&B offline unless configured) must be in place before Prefect reads its settings,
which it does when it is imported.

The project is the one around the current folder (a Prefect worker runs a deployment in its
clone) or else around the flow script being run (`python path/to/flows/pipeline.py`).
"""

from __future__ import annotations

import sys
from pathlib import Path

from segflow.env import PROJECT_MARKERS, apply_project_env, find_project_root


def flow_project_root() -> Path:
    """The segflow project this flow process works in."""
    script = Path(sys.argv[0]).resolve().parent if sys.argv and sys.argv[0].endswith(".py") else None
    for start in (Path.cwd(), script):
        root = find_project_root(start) if start else None
        if root and all((root / marker).exists() for marker in PROJECT_MARKERS):
            return root
    return Path.cwd()


apply_project_env(flow_project_root())
