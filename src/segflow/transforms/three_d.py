"""3D training transforms: MONAI dictionary transforms over {"image", "label"} arrays.

Split in two so MONAI's CacheDataset can keep the deterministic part (padding, foreground
indices) in memory and only the random part runs each epoch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from segflow.config import AugmentConfig
from segflow.transforms import resolved_patch_size

KEYS = ("image", "label")


class SamplingIndicesd:
    """MONAI's FgBgToIndicesd for the patch sampler, with the ignore label's voxels counted as
    background: a foreground-centred patch is centred on an annotated class, never on the
    unannotated voxels (nnU-Net samples the same way)."""

    def __init__(self, ignore_label: int):
        self.ignore_label = ignore_label

    def __call__(self, data: dict) -> dict:
        import numpy as np
        from monai.transforms.utils import map_binary_to_indices

        label = np.asarray(data["label"])
        foreground, background = map_binary_to_indices((label > 0) & (label != self.ignore_label))
        return {**data, "label_fg_indices": foreground, "label_bg_indices": background}


def build_cached_transforms(patch_size: Sequence[int] | str, ignore_label: int | None = None) -> list:
    """Deterministic: pad to at least the patch, precompute foreground/background voxel indices
    (the ignore label's voxels as background)."""
    from monai import transforms as T

    indices = T.FgBgToIndicesd("label") if ignore_label is None else SamplingIndicesd(ignore_label)
    return [T.SpatialPadd(KEYS, spatial_size=resolved_patch_size(patch_size)), indices]


def build_spatial_transforms(cfg: AugmentConfig, spatial_dims: int) -> list:
    """Flips, rotation and zoom on image and label (nearest for the label: no new class values)."""
    from monai import transforms as T

    angle = math.radians(cfg.rotate_range_deg)
    return [
        *[T.RandFlipd(KEYS, prob=cfg.flip_prob, spatial_axis=axis) for axis in range(spatial_dims)],
        T.RandRotated(KEYS, range_x=angle, range_y=angle, range_z=angle, prob=cfg.rotate_prob,
                      mode=("bilinear", "nearest"), padding_mode="zeros", keep_size=True),
        T.RandZoomd(KEYS, min_zoom=1 - cfg.scale_range, max_zoom=1 + cfg.scale_range, prob=cfg.scale_prob,
                    mode=("trilinear", "nearest"), padding_mode="constant", keep_size=True),
    ]


def as_monai_factors(multiplier_range: tuple[float, float]) -> tuple[float, float]:
    """MONAI scales intensities by (1 + factor): a multiplier range as MONAI's factor range."""
    low, high = multiplier_range
    return low - 1, high - 1


def build_intensity_transforms(cfg: AugmentConfig) -> list:
    """nnU-Net's intensity set on the image only: noise, blur, brightness, contrast, gamma, shift.

    Contrast and gamma keep the image's own [min, max], so z-scored values stay in range.
    """
    from monai import transforms as T

    return [
        T.RandGaussianNoised("image", prob=cfg.noise_prob, std=cfg.noise_std),
        T.RandGaussianSmoothd("image", sigma_x=cfg.blur_sigma, sigma_y=cfg.blur_sigma, sigma_z=cfg.blur_sigma,
                              prob=cfg.blur_prob),
        T.RandScaleIntensityd("image", factors=as_monai_factors(cfg.brightness_range), prob=cfg.brightness_prob),
        T.RandScaleIntensityFixedMeand("image", factors=as_monai_factors(cfg.contrast_range), fixed_mean=True,
                                       preserve_range=True, prob=cfg.contrast_prob),
        # Gamma on the image rescaled to [0, 1] and back (MONAI does this), so negatives are safe.
        T.RandAdjustContrastd("image", gamma=cfg.gamma_range, retain_stats=False, prob=cfg.gamma_prob),
        T.RandShiftIntensityd("image", offsets=cfg.intensity_shift, prob=cfg.intensity_shift_prob),
    ]


def build_random_transforms(cfg: AugmentConfig, patch_size: Sequence[int] | str, crop: bool = True) -> list:
    """Random: foreground-oversampled patch (unless `crop` is False: the item already is one, see
    segflow.transforms.patches), then nnU-Net-style spatial and intensity augmentation."""
    from monai import transforms as T

    patch = resolved_patch_size(patch_size)
    cropping = [
        T.RandCropByPosNegLabeld(KEYS, label_key="label", spatial_size=patch,
                                 pos=cfg.foreground_oversample, neg=1.0 - cfg.foreground_oversample,
                                 num_samples=1, fg_indices_key="label_fg_indices",
                                 bg_indices_key="label_bg_indices"),
    ]
    return [
        *(cropping if crop else []),
        *build_spatial_transforms(cfg, len(patch)),
        *build_intensity_transforms(cfg),
        *([T.DeleteItemsd(["label_fg_indices", "label_bg_indices"])] if crop else []),
        T.EnsureTyped(KEYS, track_meta=False),
    ]


def build_train_transforms(cfg: AugmentConfig, patch_size: Sequence[int] | str):
    """The whole training pipeline (cached + random) as one MONAI Compose."""
    from monai import transforms as T

    return T.Compose(build_cached_transforms(patch_size) + build_random_transforms(cfg, patch_size))
