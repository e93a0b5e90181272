"""Get the raw dataset into `data/` and under DVC control, with no manual step."""

from __future__ import annotations

from pathlib import Path

from segflow.config import load_params
from segflow.data.acquire import fetch_dataset
from segflow.processes.commands import dvc


def track_data(root: Path, folder: str = "data") -> str:
    """Record the data folder in data.dvc and DVC's cache (a no-op when nothing changed)."""
    if (root / f"{folder}.dvc").is_file():
        dvc(root, "commit", "--force", "--quiet", f"{folder}.dvc")
        return f"{folder}.dvc up to date"
    dvc(root, "add", "--quiet", folder)
    return f"{folder}.dvc created"


def ensure_dataset(root: Path) -> str:
    params = load_params(root / "params.yaml")
    fetched = fetch_dataset(params.data, root)
    top = Path(params.data.root).parts[0]
    return f"{fetched.message}\n{track_data(root, top)}"
