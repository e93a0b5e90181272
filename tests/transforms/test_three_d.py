"""3D MONAI training pipeline: patch shape from params, labels never interpolated, reproducible,
intensity augmentation on the image only and inside its range."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from segflow.config import AugmentConfig, load_params
from segflow.transforms.three_d import build_train_transforms

REPO_PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"
PATCH = [24, 32, 24]  # small, so the tests stay fast; params.yaml says `auto` (the plan's value)
NEW_INTENSITY = ("blur_prob", "brightness_prob", "contrast_prob", "gamma_prob")
ALWAYS = dict.fromkeys(("flip_prob", "rotate_prob", "scale_prob", "noise_prob", "intensity_shift_prob",
                        *NEW_INTENSITY), 1.0)
NEVER = dict.fromkeys(ALWAYS, 0.0)


@pytest.fixture(scope="module")
def repo_cfg() -> AugmentConfig:
    """The repo's augmentation settings (patches of the small PATCH)."""
    return load_params(REPO_PARAMS).augment


@pytest.fixture(scope="module")
def always_cfg(repo_cfg) -> AugmentConfig:
    """The repo's settings with every random augmentation switched on."""
    return with_(repo_cfg, **ALWAYS)


def with_(cfg: AugmentConfig, **changes) -> AugmentConfig:
    return AugmentConfig(**{**cfg.model_dump(), **changes})


def make_case(shape=(20, 28, 22), seed=0) -> dict:
    """A z-scored channel-first case with two classes (smaller than the patch, so it is padded)."""
    rng = np.random.default_rng(seed)
    label = np.zeros((1, *shape), dtype=np.uint8)
    label[0, 4:10, 5:15, 4:10] = 1
    label[0, 9:15, 12:22, 8:15] = 2
    return {"image": rng.normal(size=(1, *shape)).astype(np.float32), "label": label}


def run(cfg: AugmentConfig, case: dict, seed: int) -> dict:
    pipeline = build_train_transforms(cfg, PATCH)
    pipeline.set_random_state(seed=seed)
    (sample,) = pipeline(case)  # RandCropByPosNegLabeld returns a list of num_samples=1
    return sample


def test_patch_shape_equals_params_patch_size(repo_cfg):
    sample = run(repo_cfg, make_case(), seed=0)
    assert tuple(sample["image"].shape) == (1, *PATCH)
    assert tuple(sample["label"].shape) == (1, *PATCH)


def test_larger_image_is_cropped_to_the_patch(repo_cfg):
    sample = run(repo_cfg, make_case(shape=(30, 40, 30)), seed=0)
    assert tuple(sample["image"].shape) == (1, *PATCH)


def test_unresolved_auto_patch_size_is_refused_with_a_clear_error(repo_cfg):
    with pytest.raises(ValueError, match="patch_size is still 'auto'"):
        build_train_transforms(repo_cfg, "auto")


def test_image_comes_out_as_float32_tensor(always_cfg):
    case = make_case()
    case["image"] = (case["image"] * 100).astype(np.int16)  # as some scanners store it
    sample = run(always_cfg, case, seed=0)
    assert isinstance(sample["image"], torch.Tensor)
    assert sample["image"].dtype == torch.float32
    assert torch.isfinite(sample["image"]).all()


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
    case = make_case(shape=tuple(PATCH))  # patch == image: crop is the whole image
    sample = run(with_(repo_cfg, **NEVER), case, seed=0)
    assert np.array_equal(sample["image"].numpy(), case["image"])
    assert np.array_equal(sample["label"].numpy(), case["label"])


@pytest.mark.parametrize("prob", NEW_INTENSITY)
def test_intensity_transform_changes_the_image_only(repo_cfg, prob):
    case = make_case(shape=tuple(PATCH))
    sample = run(with_(repo_cfg, **{**NEVER, prob: 1.0}), case, seed=0)
    image = sample["image"].numpy()
    assert np.isfinite(image).all()
    assert not np.allclose(image, case["image"])
    assert np.array_equal(sample["label"].numpy(), case["label"])


@pytest.mark.parametrize("prob", ["contrast_prob", "gamma_prob"])
@pytest.mark.parametrize("seed", [0, 1])
def test_contrast_and_gamma_keep_z_scored_values_in_their_range(repo_cfg, prob, seed):
    case = make_case(shape=tuple(PATCH), seed=seed)
    image = run(with_(repo_cfg, **{**NEVER, prob: 1.0}), case, seed=seed)["image"].numpy()
    assert image.min() >= case["image"].min() - 1e-5 and image.max() <= case["image"].max() + 1e-5
    assert image.min() < 0  # negatives survive: no clipping to [0, 1]


def test_foreground_patches_never_centre_on_the_ignore_label(repo_cfg):
    """An annotated blob beside a large unannotated (ignore) slab: with every patch foreground-
    centred, each patch holds annotated voxels; counting the slab as foreground would centre most
    patches in it."""
    from monai.transforms import Compose

    from segflow.transforms.three_d import build_cached_transforms, build_random_transforms

    label = np.zeros((1, 40, 40, 40), np.uint8)
    label[0, 30:34, 30:34, 30:34] = 1
    label[0, :, :, :20] = 9  # ignore
    cfg = with_(repo_cfg, foreground_oversample=1.0, **NEVER)
    pipeline = Compose(build_cached_transforms([8, 8, 8], ignore_label=9) + build_random_transforms(cfg, [8, 8, 8]))
    pipeline.set_random_state(0)
    for _ in range(20):
        patch = pipeline({"image": np.zeros_like(label, np.float32), "label": label})[0]["label"]
        assert (np.asarray(patch) == 1).any()
