"""The one place where segflow's process environment is defined.

Every entry point (CLI, Prefect flows, tests, Makefile through `segflow env`) calls
`apply_project_env()`. Values are defaults: a variable the user already set wins, so
`WANDB_MODE=online make run` logs to the W&B cloud.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_MARKERS = ("dvc.yaml", "params.yaml")
# How long Prefect's temporary API server (a flow run with no PREFECT_API_URL) may take to start.
# Measured on a 2-core machine, fresh PREFECT_HOME: healthy after 10 s when quiet, 23 s with both
# cores busy, 15 s (after 9 s of imports) with no bytecode compiled yet. Prefect's default, 20 s
# (counted in its 0.1 s polling sleeps: about 30 s of wall time), failed a first run on a cold
# machine; 120 s covers a loaded one and still ends a server that will never answer.
PREFECT_STARTUP_TIMEOUT_SETTING = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
PREFECT_STARTUP_TIMEOUT_S = 120


def find_project_root(start: Path | None = None) -> Path:
    """Nearest folder at or above `start` (default: cwd) holding dvc.yaml and params.yaml."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if all((folder / marker).exists() for marker in PROJECT_MARKERS):
            return folder
    return here


def wandb_env(state: Path, project: str = "segflow") -> dict[str, str]:
    """W&B offline unless the user configures it, quiet, and every W&B folder under `state`."""
    return {
        "WANDB_MODE": "offline",
        "WANDB_PROJECT": project,
        "WANDB_SILENT": "true",
        "WANDB_CONSOLE": "off",
        "WANDB_DIR": str(state),
        "WANDB_DATA_DIR": str(state / "wandb-data"),
        "WANDB_CACHE_DIR": str(state / "wandb-cache"),
        "WANDB_CONFIG_DIR": str(state / "wandb-config"),
        "WANDB_ARTIFACT_DIR": str(state / "wandb-artifacts"),
    }


def project_env(root: Path) -> dict[str, str]:
    """Default environment for a project rooted at `root`; all state stays inside it."""
    state = root / ".segflow"
    return {
        # DVC and Prefect: no analytics, Prefect state inside the project.
        "DVC_NO_ANALYTICS": "1",
        "PREFECT_HOME": str(state / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        PREFECT_STARTUP_TIMEOUT_SETTING: str(PREFECT_STARTUP_TIMEOUT_S),
        **wandb_env(state),
        # albumentations checks the package registry for updates on import otherwise.
        "NO_ALBUMENTATIONS_UPDATE": "1",
        "PYTHONUNBUFFERED": "1",
    }


def apply_project_env(root: Path | None = None) -> dict[str, str]:
    """Set the project defaults in os.environ (user-set values win); return what is in force.

    PREFECT_HOME is created: Prefect makes only its last level, so in a fresh clone (no .segflow/
    yet) its ephemeral server could not open its database and a flow failed after a 20 s timeout."""
    root = root or find_project_root()
    applied = {}
    for key, value in project_env(root).items():
        applied[key] = os.environ.setdefault(key, value)
    Path(applied["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    return applied
