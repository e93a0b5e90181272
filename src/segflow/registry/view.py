"""What `segflow models list|show` print: the registry as a table, one entry in full."""

from __future__ import annotations

import json
from pathlib import Path

from segflow.registry.catalog import LEGACY, Catalog, describe_task
from segflow.registry.store import CHAMPION, REPAIR, Registry, Survey, summary
from segflow.tracking.provenance import describe_code


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


def models_report(catalog: Catalog) -> tuple[str, list[str]]:
    """The table `models list` prints and its warnings: every dataset's models (also from a
    registry whose index is lost, damaged or out of date), and what is wrong with each registry."""
    rows, warnings = [], []
    for dataset in catalog.datasets():
        models, problems = dataset_listing(dataset.registry)
        rows += [{**m, "dataset_key": dataset.key} for m in models]
        warnings += [f"{dataset.key}: {w}" if dataset.key != LEGACY else w for w in problems]
    if not rows and warnings:
        return f"{catalog.root}: no model can be listed (see below)", warnings
    return models_table(catalog, rows), warnings


def dataset_listing(registry: Registry) -> tuple[list[dict], list[str]]:
    """One dataset registry's rows and warnings."""
    survey = registry.survey()
    warnings = registry.problems(survey)
    if warnings and not survey.index_error:
        warnings.append(f"{REPAIR} to rebuild {registry.index_path} from the entries")
    warnings += [f"not listed, unreadable: {why}" for m, why in survey.unreadable.items() if not _listed(survey, m)]
    return listing(survey), warnings


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


def models_table(catalog: Catalog, models: list[dict]) -> str:
    """One row per model, by dataset then age; '*' marks each dataset's champion."""
    from tabulate import tabulate

    if not models:
        return f"{catalog.root}: no models registered yet (run the pipeline)"
    rows = [["*" if m.get("status") == CHAMPION else "", m["id"],
             _text(m.get("status")) + (f" ({m['note']})" if m.get("note") else ""), _dataset(m),
             describe_task(m.get("task")), _text(m.get("network")), _dice(m.get("metrics")),
             _git(m), _text(m.get("created"))]
            for m in sorted(models, key=lambda m: (m["dataset_key"], m["id"]))]
    return tabulate(rows, headers=["", "id", "status", "dataset", "task", "network", "mean Dice [95% CI]", "git",
                                   "created"])


def _git(model: dict) -> str:
    """The commit (12 hex) and '+N' when N tracked files differed from it."""
    modified = model.get("git_modified")
    sha = _text(str(model.get("git_commit") or "").removesuffix("-dirty") or None, 12)
    return sha + (f" +{len(modified)} modified" if modified else "") if modified is not None else \
        _text(model.get("git_commit"), 12)


def _dataset(model: dict) -> str:
    """The dataset's name and, for a per-dataset registry, its task hash (the folder's key)."""
    key = model["dataset_key"]
    return _text(model.get("dataset")) if key == LEGACY else key


def entry_lines(catalog: Catalog, reference: str, dataset: str | None = None) -> list[str]:
    """Where the model came from (dataset, task, code), its entry.json, then the files of its folder."""
    found, model_id = catalog.champion(dataset) if reference == CHAMPION else catalog.locate(reference)
    entry = found.registry.entry(model_id)
    folder = found.registry.model_dir(model_id)
    lines = [f"model {model_id}: {_text(entry.get('status'))} of dataset {_dataset({**entry, 'dataset_key': found.key})}"
             f" ({describe_task(entry.get('task'))})", f"code: {describe_code(entry)}", "",
             json.dumps(entry, indent=2, default=str), "", f"folder: {folder}"]
    lines += [f"  {p.relative_to(folder)}" for p in sorted(folder.rglob("*")) if p.is_file() and _shown(p, folder)]
    return lines


def _shown(path: Path, folder: Path) -> bool:
    """Top-level files and the bundle's models/configs; not every file of a deep tree."""
    return len(path.relative_to(folder).parts) <= 3
