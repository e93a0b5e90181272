"""What `segflow models list|show` print: the registry as a table, one entry in full."""

from __future__ import annotations

import json
from pathlib import Path

from segflow.registry import Registry


def _dice(metrics: dict | None) -> str:
    metrics = metrics or {}
    dice, ci = metrics.get("dice_mean"), metrics.get("dice_mean_ci95")
    if dice is None:
        return "-"
    return f"{dice:.4f} [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else f"{dice:.4f}"


def models_table(registry: Registry) -> str:
    """One row per model, oldest first; the champion is marked with '*'."""
    from tabulate import tabulate

    models = registry.models()
    if not models:
        return f"{registry.root}: no models registered yet (run the pipeline)"
    rows = [["*" if m["status"] == "champion" else "", m["id"], m["status"], m.get("network") or "-",
             _dice(m.get("metrics")), (m.get("git_commit") or "-")[:12], m.get("created") or "-"]
            for m in models]
    return tabulate(rows, headers=["", "id", "status", "network", "mean Dice [95% CI]", "git", "created"])


def entry_lines(registry: Registry, reference: str) -> list[str]:
    """The entry.json of a model, then the files of its folder."""
    entry = registry.entry(reference)
    folder = registry.model_dir(entry["id"])
    lines = [json.dumps(entry, indent=2, default=str), "", f"folder: {folder}"]
    lines += [f"  {p.relative_to(folder)}" for p in sorted(folder.rglob("*")) if p.is_file() and _shown(p, folder)]
    return lines


def _shown(path: Path, folder: Path) -> bool:
    """Top-level files and the bundle's models/configs; not every file of a deep tree."""
    return len(path.relative_to(folder).parts) <= 3
