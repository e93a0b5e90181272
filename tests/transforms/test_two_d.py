"""2D albumentations pipeline: patch shape from params, mask values preserved, reproducible."""

from __future__ import annotations

import numpy as np
import pytest

from segflow.config import AugmentConfig
from segflow.transforms.two_d import build_train_transforms_2d

KNOBS = dict(
    foreground_oversample=0.33, rotate_range_deg=15, scale_range=0.15, noise_std=0.1, intensity_shift=0.1,
)
ALWAYS = dict(flip_prob=1.0, rotate_prob=1.0, scale_prob=1.0, noise_prob=1.0, intensity_shift_prob=1.0)


def config(patch_size=(32, 48), **probs) -> AugmentConfig:
    return AugmentConfig(patch_size=list(patch_size), **KNOBS, **{**ALWAYS, **probs})


def make_slice(shape=(40, 30), seed=0) -> tuple[np.ndarray, np.ndarray]:
    image = np.random.default_rng(seed).random(shape, dtype=np.float32)
    mask = np.zeros(shape, dtype=np.uint8)
    mask[5:20, 5:20] = 1
    mask[20:35, 10:25] = 2
    return image, mask


def run(cfg: AugmentConfig, image, mask, seed: int) -> dict:
    pipeline = build_train_transforms_2d(cfg)
    pipeline.set_random_seed(seed)
    return pipeline(image=image, mask=mask)


@pytest.mark.parametrize("shape", [(40, 30), (20, 20), (80, 90)])
def test_output_shape_equals_params_patch_size(shape):
    image, mask = make_slice(shape)
    out = run(config(), image, mask, seed=0)
    assert out["image"].shape == (32, 48) and out["mask"].shape == (32, 48)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mask_values_stay_within_input_labels(seed):
    image, mask = make_slice(seed=seed)
    out = run(config(), image, mask, seed=seed)
    assert set(np.unique(out["mask"]).tolist()) <= {0, 1, 2}
    assert out["mask"].dtype == mask.dtype


def test_image_stays_float32():
    image, mask = make_slice()
    assert run(config(), image, mask, seed=0)["image"].dtype == np.float32


def test_same_seed_gives_identical_output_and_different_seed_does_not():
    image, mask = make_slice()
    first, again, other = (run(config(), image, mask, seed=s) for s in (5, 5, 6))
    assert np.array_equal(first["image"], again["image"]) and np.array_equal(first["mask"], again["mask"])
    assert not np.array_equal(first["image"], other["image"])


def test_all_probabilities_zero_is_an_identity_on_patch_sized_input():
    image, mask = make_slice(shape=(32, 48))
    off = config(**{k: 0.0 for k in ALWAYS})
    out = run(off, image, mask, seed=0)
    assert np.array_equal(out["image"], image) and np.array_equal(out["mask"], mask)
