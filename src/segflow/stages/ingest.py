"""ingest: MSD folder -> manifest.csv (one row per case) and splits.json (case-level k-fold)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from segflow.config import Params
from segflow.data.manifest import build_manifest
from segflow.data.msd import read_msd_dataset
from segflow.data.splits import kfold_split
from segflow.io import write_csv, write_json
from segflow.paths import Paths


def build_splits(manifest: pd.DataFrame, n_folds: int, seed: int) -> dict[str, int]:
    """Folds over the listed case ids (orphans are not cases; duplicates split once)."""
    listed = sorted(set(manifest.loc[manifest["listed"], "case_id"]))
    return kfold_split(listed, n_folds, seed)


def run(params: Params, paths: Paths) -> tuple[pd.DataFrame, dict]:
    dataset = read_msd_dataset(paths.root / params.data.root)
    manifest = build_manifest(dataset)
    splits = {
        "n_folds": params.split.n_folds,
        "seed": params.split.seed,
        "dataset": dataset.name,
        "labels": {str(k): v for k, v in dataset.labels.items()},
        "modality": {str(k): v for k, v in dataset.modality.items()},
        "folds": build_splits(manifest, params.split.n_folds, params.split.seed),
    }
    return manifest, splits


def main(params: Params, paths: Paths, tracker=None) -> dict:
    manifest, splits = run(params, paths)
    write_csv(paths.manifest, manifest)
    write_json(paths.splits, splits)
    return {
        "cases": int(manifest["listed"].sum()),
        "orphans": int((~manifest["listed"]).sum()),
        "folds": params.split.n_folds,
    }
