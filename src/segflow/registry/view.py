"""What `segflow models list|show` print: the registry as a table, one entry in full."""

from __future__ import annotations

import json
from pathlib import Path

from segflow.registry.store import CHAMPION, REPAIR, Registry, Survey, summary


def _dice(metrics) -> str:
    """Mean Dice with its 95% CI; '?' for a value that is not a number (a damaged summary)."""
    metrics = metrics if isinstance(metrics, dict) else {}
    dice, ci = metrics.get("dice_mean"), metrics.get("dice_mean_ci95")
    if dice is None:
        return "-"
    try:
        return f"{dice:.4f} [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else f"{dice:.4f}"
    except (TypeError, ValueError, IndexError, KeyError):
        return "?"


def _text(value, width: int | None = None) -> str:
    return "-" if value in (None, "") else str(value)[:width]


def models_report(registry: Registry) -> tuple[str, list[str]]:
    """The table `models list` prints and its warnings: what can be listed, also from a registry
    whose index is lost, damaged or out of date, and what is wrong with it."""
    survey = registry.survey()
    warnings = registry.problems(survey)
    if warnings and not survey.index_error:
        warnings.append(f"{REPAIR} to rebuild {registry.index_path} from the entries")
    warnings += [f"not listed, unreadable: {why}" for m, why in survey.unreadable.items() if not _listed(survey, m)]
    models = listing(survey)
    if not models and warnings:
        return f"{registry.root}: no model can be listed (see below)", warnings
    return models_table(registry, models), warnings


def _listed(survey: Survey, model_id: str) -> bool:
    return bool(survey.index) and model_id in survey.index["models"]


def listing(survey: Survey) -> list[dict]:
    """One row per model, oldest first: the index's summaries, then entries the index does not
    hold (all of them when the index is missing or unusable), each with a note on what is off."""
    listed = survey.index["models"] if survey.index else {}
    rows = {m: {"id": m, **s, "note": "" if m in survey.entries else "folder missing"} for m, s in listed.items()}
    for model_id, entry in survey.entries.items():
        if model_id not in rows:
            rows[model_id] = {"id": model_id, **summary(entry), "note": "not in index.json" if survey.index else ""}
    return [rows[m] for m in sorted(rows)]


def models_table(registry: Registry, models: list[dict]) -> str:
    """One row per model; the champion is marked with '*'."""
    from tabulate import tabulate

    if not models:
        return f"{registry.root}: no models registered yet (run the pipeline)"
    rows = [["*" if m.get("status") == CHAMPION else "", m["id"],
             _text(m.get("status")) + (f" ({m['note']})" if m.get("note") else ""), _text(m.get("network")),
             _dice(m.get("metrics")), _text(m.get("git_commit"), 12), _text(m.get("created"))]
            for m in models]
    return tabulate(rows, headers=["", "id", "status", "network", "mean Dice [95% CI]", "git", "created"])


def entry_lines(registry: Registry, reference: str) -> list[str]:
    """The entry.json of a model, then the files of its folder."""
    model_id = registry.model_id(reference)
    entry = registry.entry(model_id)
    folder = registry.model_dir(model_id)
    lines = [json.dumps(entry, indent=2, default=str), "", f"folder: {folder}"]
    lines += [f"  {p.relative_to(folder)}" for p in sorted(folder.rglob("*")) if p.is_file() and _shown(p, folder)]
    return lines


def _shown(path: Path, folder: Path) -> bool:
    """Top-level files and the bundle's models/configs; not every file of a deep tree."""
    return len(path.relative_to(folder).parts) <= 3
