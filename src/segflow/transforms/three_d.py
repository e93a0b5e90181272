"""3D training transforms: MONAI dictionary transforms over {"image", "label"} tensors."""

from __future__ import annotations

import math

from segflow.config import AugmentConfig

KEYS = ("image", "label")


def build_train_transforms(cfg: AugmentConfig):
    """Pad to the patch, sample a patch (foreground-oversampled), then nnU-Net-style augmentation."""
    from monai import transforms as T

    patch = list(cfg.patch_size)
    angle = math.radians(cfg.rotate_range_deg)
    return T.Compose([
        T.SpatialPadd(KEYS, spatial_size=patch),
        T.RandCropByPosNegLabeld(KEYS, label_key="label", spatial_size=patch,
                                 pos=cfg.foreground_oversample, neg=1.0 - cfg.foreground_oversample,
                                 num_samples=1, image_key="image", allow_smaller=False),
        *[T.RandFlipd(KEYS, prob=cfg.flip_prob, spatial_axis=axis) for axis in range(len(patch))],
        T.RandRotated(KEYS, range_x=angle, range_y=angle, range_z=angle, prob=cfg.rotate_prob,
                      mode=("bilinear", "nearest"), padding_mode="zeros", keep_size=True),
        T.RandZoomd(KEYS, min_zoom=1 - cfg.scale_range, max_zoom=1 + cfg.scale_range, prob=cfg.scale_prob,
                    mode=("trilinear", "nearest"), padding_mode="constant", keep_size=True),
        T.RandGaussianNoised("image", prob=cfg.noise_prob, std=cfg.noise_std),
        T.RandShiftIntensityd("image", offsets=cfg.intensity_shift, prob=cfg.intensity_shift_prob),
        T.EnsureTyped(KEYS, track_meta=False),
    ])
