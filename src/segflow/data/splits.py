"""The case-level k-fold split (artifacts/ingest/splits.json): the seeded rule that makes it,
its schema, and its one reader and writer. Every stage that needs a fold's cases asks `Splits`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict

from segflow.files import load_json_model, write_json


def kfold_split(case_ids: list[str], n_folds: int, seed: int) -> dict[str, int]:
    """Map each case id to a fold in [0, n_folds); sorted ids + seeded shuffle = reproducible."""
    if len(case_ids) != len(set(case_ids)):
        raise ValueError("case ids must be unique to split them into folds")
    ordered = sorted(case_ids)
    order = np.random.default_rng(seed).permutation(len(ordered))
    return {ordered[index]: position % n_folds for position, index in enumerate(order)}


def fold_cases(folds: dict[str, int], fold: int | str, cases: list[str]) -> tuple[list[str], list[str]]:
    """(training, validation) ids among `cases` for validation fold `fold`; fold `all` trains on
    every case and validates on none."""
    validation = sorted(c for c in cases if folds.get(c) == fold)
    training = sorted(c for c in cases if c in folds and folds[c] != fold)
    return training, validation


NNUNET_SPLITS = "splits_final.json"  # nnU-Net's folds: [{"train": [...], "val": [...]}, ...]


def nnunet_folds(path: Path, cases: list[str]) -> dict[str, int]:
    """Case -> fold from nnU-Net's splits_final.json (fold k validates on its `val` list). Every
    case must be validated in exactly one fold; ids the dataset does not have are ignored."""
    from segflow.config import ConfigError

    try:
        data = json.loads(Path(path).read_text())
        vals = [[str(c) for c in fold["val"]] for fold in data]
        if not isinstance(data, list) or not all(isinstance(fold["val"], list) for fold in data):
            raise TypeError("each fold's 'val' must be a list of case ids")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError, KeyError) as exc:
        raise ConfigError(f"{path}: not an nnU-Net splits file (a list of {{\"train\": [...], \"val\": [...]}}): "
                          f"{type(exc).__name__}: {exc}") from None
    folds: dict[str, int] = {}
    for fold, ids in enumerate(vals):
        for case in ids:
            if folds.setdefault(case, fold) != fold:
                raise ConfigError(f"{path}: case {case} is validated in folds {folds[case]} and {fold}")
    unplaced = [c for c in cases if c not in folds]
    if unplaced or not vals:
        raise ConfigError(f"{path}: {len(unplaced)} case(s) of the dataset are in no fold's val list "
                          f"({', '.join(unplaced[:5])}{' ...' if len(unplaced) > 5 else ''}); fix or delete the file")
    return {case: folds[case] for case in sorted(cases)}


class Splits(BaseModel):
    """What ingest knows of the dataset: its name, classes, modalities and each case's fold."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    n_folds: int
    seed: int
    dataset: str
    labels: dict[str, str]  # class index (as the network sees it) -> name
    label_values: list[int]  # raw label values a mask may hold as delivered
    modality: dict[str, str] = {}
    folds: dict[str, int]  # case id -> fold
    ignore_label: int | None = None  # raw label value left out of the loss and metrics
    layout: str = "msd"  # the dataset's layout, as detected
    folds_from: str = "seeded k-fold"  # or splits_final.json
    regions: dict | None = None  # region-based labels (segflow.data.regions.Regions.to_dict); `labels` then
    # names background and one output per region

    def cases_of_fold(self, fold: int, among: list[str]) -> tuple[list[str], list[str]]:
        """(training, validation) ids among `among` (e.g. the cached cases) for fold `fold`."""
        return fold_cases(self.folds, fold, among)

    @classmethod
    def load(cls, path: Path | str) -> Splits:
        """Read splits.json; a missing or invalid file is a `ConfigError` naming it."""
        return load_json_model(cls, path, "split", "run the ingest stage (dvc repro ingest)")

    def save(self, path: Path | str) -> None:
        write_json(path, self.model_dump(mode="json"))
