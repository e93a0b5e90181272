"""A checkpoint is resumed only by a run with the same params, cached data and training code."""

from __future__ import annotations

import numpy as np

from segflow.config import load_params
from segflow.data.preprocess import Volume, save_volume
from segflow.paths import Paths
from segflow.stages.train import code_digest, fingerprint

from conftest import REPO


def cache_case(paths: Paths, case: str, value: float) -> None:
    image = np.full((1, 4, 4, 4), value, np.float32)
    save_volume(paths.preprocessed / f"{case}.npz", Volume(image, np.zeros((1, 4, 4, 4), np.uint8), np.eye(4)))


def test_fingerprint_changes_with_cached_data_and_params(tmp_path):
    params, paths = load_params(REPO / "params.yaml"), Paths(tmp_path)
    cache_case(paths, "a", 0.0)
    before = fingerprint(params, paths, ["a"])
    assert fingerprint(params, paths, ["a"]) == before
    cache_case(paths, "a", 1.0)
    assert fingerprint(params, paths, ["a"]) != before
    changed = params.model_copy(update={"train": params.train.model_copy(update={"lr": 0.1})})
    assert fingerprint(changed, paths, ["a"]) != fingerprint(params, paths, ["a"])


def test_code_digest_covers_the_training_code():
    digest = code_digest()
    assert {"training.py", "stages/train.py", "models/factory.py", "transforms/three_d.py"} <= set(digest)
