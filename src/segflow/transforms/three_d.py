"""3D training transforms: MONAI dictionary transforms over {"image", "label"} arrays.

Split in two so MONAI's CacheDataset can keep the deterministic part (padding, foreground
indices) in memory and only the random part runs each epoch.
"""

from __future__ import annotations

import math

from segflow.config import AugmentConfig

KEYS = ("image", "label")


def build_cached_transforms(cfg: AugmentConfig) -> list:
    """Deterministic: pad to at least the patch, precompute foreground/background voxel indices."""
    from monai import transforms as T

    return [T.SpatialPadd(KEYS, spatial_size=list(cfg.patch_size)), T.FgBgToIndicesd("label")]


def build_random_transforms(cfg: AugmentConfig) -> list:
    """Random: foreground-oversampled patch, then nnU-Net-style spatial and intensity augmentation."""
    from monai import transforms as T

    patch = list(cfg.patch_size)
    angle = math.radians(cfg.rotate_range_deg)
    return [
        T.RandCropByPosNegLabeld(KEYS, label_key="label", spatial_size=patch,
                                 pos=cfg.foreground_oversample, neg=1.0 - cfg.foreground_oversample,
                                 num_samples=1, fg_indices_key="label_fg_indices",
                                 bg_indices_key="label_bg_indices"),
        *[T.RandFlipd(KEYS, prob=cfg.flip_prob, spatial_axis=axis) for axis in range(len(patch))],
        T.RandRotated(KEYS, range_x=angle, range_y=angle, range_z=angle, prob=cfg.rotate_prob,
                      mode=("bilinear", "nearest"), padding_mode="zeros", keep_size=True),
        T.RandZoomd(KEYS, min_zoom=1 - cfg.scale_range, max_zoom=1 + cfg.scale_range, prob=cfg.scale_prob,
                    mode=("trilinear", "nearest"), padding_mode="constant", keep_size=True),
        T.RandGaussianNoised("image", prob=cfg.noise_prob, std=cfg.noise_std),
        T.RandShiftIntensityd("image", offsets=cfg.intensity_shift, prob=cfg.intensity_shift_prob),
        T.DeleteItemsd(["label_fg_indices", "label_bg_indices"]),
        T.EnsureTyped(KEYS, track_meta=False),
    ]


def build_train_transforms(cfg: AugmentConfig):
    """The whole training pipeline (cached + random) as one MONAI Compose."""
    from monai import transforms as T

    return T.Compose(build_cached_transforms(cfg) + build_random_transforms(cfg))
