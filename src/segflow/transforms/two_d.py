"""2D training transforms: albumentations over (H, W) images and masks."""

from __future__ import annotations

from segflow.config import AugmentConfig


def build_train_transforms_2d(cfg: AugmentConfig):
    """The same knobs as the 3D pipeline, applied with albumentations to one slice or image."""
    import albumentations as A

    height, width = cfg.patch_size
    return A.Compose([
        A.PadIfNeeded(min_height=height, min_width=width, border_mode=0, fill=0, fill_mask=0),
        A.RandomCrop(height=height, width=width),
        A.HorizontalFlip(p=cfg.flip_prob),
        A.VerticalFlip(p=cfg.flip_prob),
        A.Affine(rotate=(-cfg.rotate_range_deg, cfg.rotate_range_deg), p=cfg.rotate_prob,
                 border_mode=0, fill=0, fill_mask=0),
        A.Affine(scale=(1 - cfg.scale_range, 1 + cfg.scale_range), p=cfg.scale_prob,
                 border_mode=0, fill=0, fill_mask=0),
        A.GaussNoise(std_range=(0.0, min(cfg.noise_std, 1.0)), p=cfg.noise_prob),
        A.RandomBrightnessContrast(brightness_limit=cfg.intensity_shift, contrast_limit=0.0,
                                   p=cfg.intensity_shift_prob),
    ])
