"""2D training transforms: albumentations over (H, W) images and masks, wrapped so the
training loop sees the same {"image", "label"} channel-first dictionaries as in 3D."""

from __future__ import annotations

import numpy as np

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


from monai.transforms import Randomizable  # noqa: E402 - after the light imports on purpose


class AlbumentationsD(Randomizable):
    """Apply an albumentations pipeline to a MONAI-style dict of channel-first arrays.

    Has MONAI's `set_random_state(seed=...)` so the training loop reseeds it per epoch
    exactly like the 3D MONAI transforms (resume stays reproducible).
    """

    def __init__(self, pipeline):
        self.pipeline = pipeline

    def set_random_state(self, seed: int | None = None, state=None) -> AlbumentationsD:
        super().set_random_state(seed, state)
        self.pipeline.set_random_seed(int(self.R.randint(0, 2**31 - 1)))
        return self

    def randomize(self, data=None) -> None:  # albumentations draws its own parameters
        return None

    def __call__(self, data: dict) -> dict:
        import torch

        image = np.moveaxis(np.asarray(data["image"], dtype=np.float32), 0, -1)  # (H, W, C)
        mask = np.asarray(data["label"])[0]
        out = self.pipeline(image=image, mask=mask)
        image_out = np.moveaxis(out["image"].reshape(*out["image"].shape[:2], -1), -1, 0)
        return {**data, "image": torch.as_tensor(np.ascontiguousarray(image_out), dtype=torch.float32),
                "label": torch.as_tensor(np.ascontiguousarray(out["mask"])[None].astype(np.float32))}


def build_random_transforms_2d(cfg: AugmentConfig) -> list:
    """The 2D random part as a list, like the 3D builder (nothing needs caching in 2D)."""
    return [AlbumentationsD(build_train_transforms_2d(cfg))]
