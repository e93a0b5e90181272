"""Training test helpers: a few synthetic cached cases, the repo's augmentation with its random
transforms made likely to fire, deterministic CPU settings, and a tiny one-fold project as the
augment stage leaves it for train.

A plain module, not a conftest.py: a second module named `conftest` would shadow the root one
that other test modules import from. Test modules import the fixtures they use from here."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO, merge

from segflow.config import AugmentConfig, parse_params
from segflow.data.cache import PreprocessedCache
from segflow.data.preprocess import Volume

REPO_PARAMS = REPO / "params.yaml"
NET_ARGS = dict(spatial_dims=3, in_channels=1, out_channels=3, channels=[4, 8], strides=[2], num_res_units=1)
PATCH = [16, 16, 16]
SEED = 7
CASES = [f"case_{i:03d}" for i in range(5)]
LABELS = {"0": "background", "1": "Anterior", "2": "Posterior"}


@pytest.fixture
def deterministic_cpu():
    """One thread, deterministic kernels, no MONAI meta tracking (as the Trainer runs)."""
    from monai.data import set_track_meta

    threads, was_deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    set_track_meta(False)
    yield
    set_track_meta(True)
    torch.use_deterministic_algorithms(was_deterministic)
    torch.set_num_threads(threads)


@pytest.fixture
def synthetic_cache(tmp_path) -> Path:
    """A few (1, 24, 24, 24) cases with two foreground classes, written as the augment stage does."""
    cache = tmp_path / "preprocessed"
    for i, case_id in enumerate(CASES):
        rng = np.random.default_rng(i)
        label = np.zeros((1, 24, 24, 24), np.uint8)
        x, y, z = rng.integers(4, 10, size=3)
        label[0, x:x + 6, y:y + 6, z:z + 8] = 1
        label[0, x + 6:x + 12, y:y + 6, z:z + 8] = 2
        image = (label.astype(np.float32) + rng.normal(0, 0.5, label.shape)).astype(np.float32)
        PreprocessedCache(cache).write_case(case_id, Volume(image, label, np.eye(4)), [1.0, 1.0, 1.0])
    return cache


def augment_config() -> AugmentConfig:
    """The repo's augmentation with every random transform likely to fire on a tiny patch."""
    raw = yaml.safe_load(REPO_PARAMS.read_text())["augment"]
    probs = {k: 0.5 for k in raw if k.endswith("_prob")}
    return AugmentConfig(**{**raw, **probs})


def always_config() -> AugmentConfig:
    """The repo's augmentation with every random transform switched on."""
    raw = yaml.safe_load(REPO_PARAMS.read_text())["augment"]
    return AugmentConfig(**{**raw, **{k: 1.0 for k in raw if k.endswith("_prob")}})


def write_fold_project(root: Path, cache: Path) -> None:
    """What ingest and preprocess leave for train: the cached cases, their index and the split."""
    from segflow.data.splits import Splits

    shutil.copytree(cache, root / "artifacts" / "preprocessed")
    entries = {case: {"shape": [24, 24, 24], "channels": 1, "spacing": [1.0, 1.0, 1.0]} for case in CASES}
    (root / "artifacts" / "preprocessed" / "index.json").write_text(json.dumps({"cases": entries}))
    folds = {case: int(i >= 2) for i, case in enumerate(CASES)}  # fold 0: 2 validation, 3 training cases
    Splits(n_folds=2, seed=0, dataset="Tiny", labels=LABELS, label_values=[0, 1, 2], folds=folds).save(
        root / "artifacts" / "ingest" / "splits.json")


def tiny_params(**train):
    """This repo's params shrunk to one epoch of the tiny network on the synthetic fold."""
    raw = merge(yaml.safe_load(REPO_PARAMS.read_text()), {
        "seed": SEED, "split": {"n_folds": 2, "folds": [0]},
        "preprocess": {"patch_size": PATCH, "target_spacing": [1.0, 1.0, 1.0], "normalisation": "zscore"},
        "model": {k: v for k, v in NET_ARGS.items() if k != "spatial_dims"},
        "train": {"epochs": 1, "batch_size": 2, "val_every": 1, "num_threads": 1, **train}})
    return parse_params(raw)
