"""ingest: MSD folder -> manifest.csv (one row per case) and splits.json (case-level k-fold)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from segflow.config import DataConfig, Params
from segflow.data.layouts import read_layout
from segflow.data.manifest import build_manifest
from segflow.data.msd import MsdDataset
from segflow.data.splits import NNUNET_SPLITS, Splits, kfold_split, nnunet_folds
from segflow.files import write_csv
from segflow.paths import Paths

DVC_CACHE = ".dvc/cache"  # DVC's default cache folder


def build_splits(manifest: pd.DataFrame, n_folds: int, seed: int) -> dict[str, int]:
    """Folds over the listed case ids (orphans are not cases; duplicated ids split once).

    Cases with identical content are split as one group, so a duplicate never lands in two
    folds (validation would rightly call that leakage and stop)."""
    listed = manifest[manifest["listed"].astype(bool)].drop_duplicates("case_id")
    hashes = listed["content_hash"].fillna("").astype(str).tolist()
    first_with = {}  # content hash -> first case id holding it (names the group)
    for case, digest in sorted(zip(listed["case_id"], hashes, strict=True)):
        first_with.setdefault(digest or case, case)
    group_of = {case: first_with[digest or case] for case, digest in zip(listed["case_id"], hashes, strict=True)}
    group_folds = kfold_split(sorted(set(group_of.values())), n_folds, seed)
    return {case: group_folds[group] for case, group in sorted(group_of.items())}


def read_dataset(cfg: DataConfig, root: Path) -> MsdDataset:
    """The delivery in its layout (detected for `auto`); for 2D folders the declared labels are
    the raw mask values of data.labels / data.label_map."""
    raw_names = None
    if cfg.labels:
        mapping = cfg.label_map or {k: k for k in cfg.labels}
        raw_names = {raw: cfg.labels[target] for raw, target in mapping.items()}
    return read_layout(root, cfg.layout, cfg.image_dir, cfg.label_dir, raw_names)


def class_labels(cfg: DataConfig, dataset: MsdDataset) -> dict[str, str]:
    """Class index -> name as the network sees them (after any label_map; no ignore label)."""
    labels = cfg.labels if dataset.layout == "folders2d" else dataset.class_labels
    return {str(k): v for k, v in sorted(labels.items())}


def dataset_folds(params: Params, root: Path, manifest: pd.DataFrame) -> tuple[int, dict[str, int], str]:
    """(number of folds, case -> fold, where they come from): nnU-Net's splits_final.json beside
    the dataset when there is one (results then compare with nnU-Net's on the same folds), else
    segflow's seeded k-fold over content groups."""
    listed = sorted(set(manifest.loc[manifest["listed"].astype(bool), "case_id"]))
    if (root / NNUNET_SPLITS).is_file():
        folds = nnunet_folds(root / NNUNET_SPLITS, listed)
        return max(folds.values()) + 1, folds, NNUNET_SPLITS
    return params.split.n_folds, build_splits(manifest, params.split.n_folds, params.split.seed), "seeded k-fold"


def run(params: Params, paths: Paths) -> tuple[pd.DataFrame, Splits]:
    dataset = read_dataset(params.data, paths.root / params.data.root)
    # A DVC cache of link type (`dvc config cache.type symlink`) links tracked files in from here.
    manifest = build_manifest(dataset, link_roots=(paths.root / DVC_CACHE,))
    n_folds, folds, source = dataset_folds(params, paths.root / params.data.root, manifest)
    splits = Splits(n_folds=n_folds, seed=params.split.seed, dataset=dataset.name,
                    labels=class_labels(params.data, dataset),
                    label_values=sorted(int(k) for k in dataset.labels),
                    modality={str(k): v for k, v in dataset.modality.items()},
                    folds=folds, ignore_label=dataset.ignore_label, layout=dataset.layout, folds_from=source,
                    regions=dataset.regions.to_dict() if dataset.regions else None)
    return manifest, splits


def main(params: Params, paths: Paths, tracker=None) -> dict:
    manifest, splits = run(params, paths)
    write_csv(paths.manifest, manifest)
    splits.save(paths.splits)
    if tracker:
        from segflow.tracking.runs import dataset_artifact

        tracker.log_artifact([paths.manifest, paths.splits], name=dataset_artifact(splits.dataset),
                             type="dataset", metadata={"cases": int(manifest["listed"].sum()),
                                                       "n_folds": params.split.n_folds, "seed": params.split.seed})
    return {
        "cases": int(manifest["listed"].sum()),
        "orphans": int((~manifest["listed"]).sum()),
        "folds": splits.n_folds,
    }
