"""2D albumentations pipeline: patch shape from params, mask values preserved, reproducible, and
intensity augmentation that suits z-scored float images (no clipping to [0, 1], no NaNs)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segflow.config import AugmentConfig
from segflow.transforms.two_d import (
    AlbumentationsD,
    ContrastAroundMean,
    GammaInRange,
    build_train_transforms_2d,
)

KNOBS = dict(
    foreground_oversample=0.33, rotate_range_deg=15, scale_range=0.15, noise_std=0.1, intensity_shift=0.1,
)
INTENSITY = ("noise_prob", "intensity_shift_prob", "blur_prob", "brightness_prob", "contrast_prob", "gamma_prob")
ALWAYS = dict.fromkeys(("flip_prob", "rotate_prob", "scale_prob", *INTENSITY), 1.0)
NEVER = dict.fromkeys(ALWAYS, 0.0)


PATCH = [32, 48]


def config(**probs) -> AugmentConfig:
    return AugmentConfig(**KNOBS, **{**ALWAYS, **probs})


def make_slice(shape=(40, 30), seed=0) -> tuple[np.ndarray, np.ndarray]:
    """A z-scored float32 image (negative values included) and a two-class mask."""
    image = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    mask = np.zeros(shape, dtype=np.uint8)
    mask[5:20, 5:20] = 1
    mask[20:35, 10:25] = 2
    return image, mask


def run(cfg: AugmentConfig, image, mask, seed: int) -> dict:
    pipeline = build_train_transforms_2d(cfg, PATCH)
    pipeline.set_random_seed(seed)
    return pipeline(image=image, mask=mask)


@pytest.mark.parametrize("shape", [(40, 30), (20, 20), (80, 90)])
def test_output_shape_equals_params_patch_size(shape):
    image, mask = make_slice(shape)
    out = run(config(), image, mask, seed=0)
    assert out["image"].shape == (32, 48) and out["mask"].shape == (32, 48)


def test_unresolved_auto_patch_size_is_refused_with_a_clear_error():
    with pytest.raises(ValueError, match="patch_size is still 'auto'"):
        build_train_transforms_2d(AugmentConfig(**KNOBS, **ALWAYS), "auto")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mask_values_stay_within_input_labels(seed):
    image, mask = make_slice(seed=seed)
    out = run(config(), image, mask, seed=seed)
    assert set(np.unique(out["mask"]).tolist()) <= {0, 1, 2}
    assert out["mask"].dtype == mask.dtype


def test_image_stays_finite_float32_and_z_scored():
    image, mask = make_slice()
    out = run(config(), image, mask, seed=0)["image"]
    assert out.dtype == np.float32 and np.isfinite(out).all()
    assert out.min() < -1 and out.max() > 1  # albumentations' own pixel transforms clip to [0, 1]


def test_same_seed_gives_identical_output_and_different_seed_does_not():
    image, mask = make_slice()
    first, again, other = (run(config(), image, mask, seed=s) for s in (5, 5, 6))
    assert np.array_equal(first["image"], again["image"]) and np.array_equal(first["mask"], again["mask"])
    assert not np.array_equal(first["image"], other["image"])


def test_all_probabilities_zero_is_an_identity_on_patch_sized_input():
    image, mask = make_slice(shape=(32, 48))
    out = run(config(**NEVER), image, mask, seed=0)
    assert np.array_equal(out["image"], image) and np.array_equal(out["mask"], mask)


@pytest.mark.parametrize("prob", INTENSITY)
def test_intensity_transform_changes_the_image_only(prob):
    image, mask = make_slice(shape=(32, 48))
    out = run(config(**{**NEVER, prob: 1.0}), image, mask, seed=0)
    assert np.isfinite(out["image"]).all()
    assert not np.allclose(out["image"], image)
    assert np.array_equal(out["mask"], mask)


@pytest.mark.parametrize("prob", ["contrast_prob", "gamma_prob"])
def test_contrast_and_gamma_keep_values_in_the_image_range(prob):
    image, mask = make_slice(shape=(32, 48))
    out = run(config(**{**NEVER, prob: 1.0}), image, mask, seed=0)["image"]
    assert out.min() >= image.min() - 1e-5 and out.max() <= image.max() + 1e-5


def test_contrast_and_gamma_compute_what_the_3d_monai_transforms_compute():
    from monai.transforms import AdjustContrast, ScaleIntensityFixedMean

    image, _ = make_slice()
    monai_gamma = AdjustContrast(1.3)(image[None]).numpy()[0]
    monai_contrast = ScaleIntensityFixedMean(factor=0.2, preserve_range=True, fixed_mean=True)(image[None])[0]
    assert np.allclose(GammaInRange((1, 1), p=1).change(image, 1.3), monai_gamma, atol=1e-5)
    assert np.allclose(ContrastAroundMean((1, 1), p=1).change(image, 1.2), np.asarray(monai_contrast), atol=1e-5)


def test_dictionary_wrapper_is_reseeded_like_monai_transforms():
    image, mask = make_slice(shape=(32, 48))
    data = {"image": image[None], "label": mask[None]}

    def sample(seed: int) -> torch.Tensor:
        return AlbumentationsD(build_train_transforms_2d(config(), PATCH)).set_random_state(seed=seed)(data)["image"]

    assert torch.equal(sample(3), sample(3)) and not torch.equal(sample(3), sample(4))
