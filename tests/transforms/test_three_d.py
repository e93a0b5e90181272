"""3D MONAI training pipeline: patch shape from params, labels never interpolated, reproducible."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from segflow.config import AugmentConfig, load_params
from segflow.transforms.three_d import build_train_transforms

REPO_PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"
ALWAYS = dict(flip_prob=1.0, rotate_prob=1.0, scale_prob=1.0, noise_prob=1.0, intensity_shift_prob=1.0)


@pytest.fixture(scope="module")
def repo_cfg() -> AugmentConfig:
    return load_params(REPO_PARAMS).augment


@pytest.fixture(scope="module")
def always_cfg(repo_cfg) -> AugmentConfig:
    """The repo's settings with every random augmentation switched on."""
    return AugmentConfig(**{**repo_cfg.model_dump(), **ALWAYS})


def make_case(shape=(36, 52, 38), seed=0) -> dict:
    """A hippocampus-sized channel-first case (smaller than the patch, so it is padded)."""
    rng = np.random.default_rng(seed)
    label = np.zeros((1, *shape), dtype=np.uint8)
    label[0, 8:20, 10:30, 8:20] = 1
    label[0, 18:30, 25:45, 15:30] = 2
    return {"image": rng.normal(size=(1, *shape)).astype(np.float32), "label": label}


def run(cfg: AugmentConfig, case: dict, seed: int) -> dict:
    pipeline = build_train_transforms(cfg)
    pipeline.set_random_state(seed=seed)
    (sample,) = pipeline(case)  # RandCropByPosNegLabeld returns a list of num_samples=1
    return sample


def test_patch_shape_equals_params_patch_size(repo_cfg):
    sample = run(repo_cfg, make_case(), seed=0)
    assert tuple(sample["image"].shape) == (1, *repo_cfg.patch_size)
    assert tuple(sample["label"].shape) == (1, *repo_cfg.patch_size)


def test_larger_image_is_cropped_to_the_patch(repo_cfg):
    sample = run(repo_cfg, make_case(shape=(60, 70, 50)), seed=0)
    assert tuple(sample["image"].shape) == (1, *repo_cfg.patch_size)


def test_image_comes_out_as_float32_tensor(always_cfg):
    case = make_case()
    case["image"] = (case["image"] * 100).astype(np.int16)  # as some scanners store it
    sample = run(always_cfg, case, seed=0)
    assert isinstance(sample["image"], torch.Tensor)
    assert sample["image"].dtype == torch.float32


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rotation_and_zoom_create_no_new_label_values(always_cfg, seed):
    sample = run(always_cfg, make_case(seed=seed), seed=seed)
    values = set(torch.unique(sample["label"]).tolist())
    assert values <= {0, 1, 2}
    assert values & {1, 2}  # foreground survives (crop may be centred on it)


def test_same_seed_gives_identical_patches(always_cfg):
    first, second = run(always_cfg, make_case(), seed=7), run(always_cfg, make_case(), seed=7)
    assert torch.equal(first["image"], second["image"])
    assert torch.equal(first["label"], second["label"])


def test_different_seed_gives_different_patch(always_cfg):
    first, second = run(always_cfg, make_case(), seed=7), run(always_cfg, make_case(), seed=8)
    assert not torch.equal(first["image"], second["image"])


def test_all_probabilities_zero_leaves_voxels_untouched(repo_cfg):
    off = AugmentConfig(**{**repo_cfg.model_dump(), **{k: 0.0 for k in ALWAYS}})
    case = make_case(shape=tuple(repo_cfg.patch_size))  # patch == image: crop is the whole image
    sample = run(off, case, seed=0)
    assert np.array_equal(sample["image"].numpy(), case["image"])
    assert np.array_equal(sample["label"].numpy(), case["label"])
