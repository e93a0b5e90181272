"""Case-level k-fold split with a fixed seed, stable across runs and machines."""

from __future__ import annotations

import numpy as np


def kfold_split(case_ids: list[str], n_folds: int, seed: int) -> dict[str, int]:
    """Map each case id to a fold in [0, n_folds); sorted ids + seeded shuffle = reproducible."""
    if len(case_ids) != len(set(case_ids)):
        raise ValueError("case ids must be unique to split them into folds")
    ordered = sorted(case_ids)
    order = np.random.default_rng(seed).permutation(len(ordered))
    return {ordered[index]: position % n_folds for position, index in enumerate(order)}


def fold_cases(folds: dict[str, int], fold: int, cases: list[str]) -> tuple[list[str], list[str]]:
    """(training, validation) ids among `cases` for validation fold `fold`."""
    validation = sorted(c for c in cases if folds.get(c) == fold)
    training = sorted(c for c in cases if c in folds and folds[c] != fold)
    return training, validation
