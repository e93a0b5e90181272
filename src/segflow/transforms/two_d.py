"""2D training transforms: albumentations over (H, W) images and masks, wrapped so the
training loop sees the same {"image", "label"} channel-first dictionaries as in 3D.

albumentations' own pixel transforms (GaussNoise, GaussianBlur, RandomBrightnessContrast,
RandomGamma, ...) clip float32 images to [0, 1] or take powers of negatives, which breaks
z-scored images. The intensity transforms here are small albumentations transforms that do the
same arithmetic as the 3D MONAI ones without clipping; they draw their parameters from
albumentations' generator, so `Compose.set_random_seed` still seeds the whole pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence

import albumentations as A
import numpy as np

from segflow.config import AugmentConfig
from segflow.transforms import resolved_patch_size


class UniformIntensity(A.ImageOnlyTransform):
    """Base: draws one `value` uniformly from `value_range`, then `change(image, value)`."""

    def __init__(self, value_range: tuple[float, float], p: float = 0.5):
        super().__init__(p=p)
        self.value_range = tuple(value_range)

    def get_params(self) -> dict:
        return {"value": float(self.random_generator.uniform(*self.value_range))}

    def apply(self, img: np.ndarray, value: float = 0.0, **params) -> np.ndarray:
        return self.change(np.asarray(img, dtype=np.float32), value).astype(np.float32, copy=False)

    def change(self, image: np.ndarray, value: float) -> np.ndarray:
        raise NotImplementedError


class ShiftIntensity(UniformIntensity):
    """Adds the drawn offset (MONAI RandShiftIntensity)."""

    def change(self, image: np.ndarray, value: float) -> np.ndarray:
        return image + value


class MultiplyIntensity(UniformIntensity):
    """Multiplies by the drawn factor: nnU-Net's multiplicative brightness."""

    def change(self, image: np.ndarray, value: float) -> np.ndarray:
        return image * value


class ContrastAroundMean(UniformIntensity):
    """Scales around the mean, clipped to the image's own range (MONAI ScaleIntensityFixedMean
    with preserve_range=True)."""

    def change(self, image: np.ndarray, value: float) -> np.ndarray:
        mean = image.mean()
        return np.clip((image - mean) * value + mean, image.min(), image.max())


class GammaInRange(UniformIntensity):
    """Gamma on the image rescaled to [0, 1], then mapped back to its own range (MONAI
    AdjustContrast): safe for negative values, unlike A.RandomGamma."""

    def change(self, image: np.ndarray, value: float) -> np.ndarray:
        low, span = image.min(), image.max() - image.min()
        return ((image - low) / (span + 1e-7)) ** value * span + low


class GaussianBlurInPlane(UniformIntensity):
    """Gaussian smoothing with one sigma per image axis drawn from `value_range` (channels kept
    apart), like MONAI RandGaussianSmooth."""

    def get_params(self) -> dict:
        return {"sigmas": tuple(float(s) for s in self.random_generator.uniform(*self.value_range, size=2))}

    def apply(self, img: np.ndarray, sigmas: tuple[float, float] = (0.0, 0.0), **params) -> np.ndarray:
        from scipy.ndimage import gaussian_filter

        image = np.asarray(img, dtype=np.float32)
        return gaussian_filter(image, sigma=(*sigmas, 0)[: image.ndim])


class GaussianNoise(UniformIntensity):
    """Adds N(0, std) noise with std drawn from `value_range` (MONAI RandGaussianNoise)."""

    def get_params_dependent_on_data(self, params: dict, data: dict) -> dict:
        noise = self.random_generator.normal(0.0, params["value"], size=data["image"].shape)
        return {"noise": noise.astype(np.float32)}

    def apply(self, img: np.ndarray, noise: np.ndarray | None = None, **params) -> np.ndarray:
        return np.asarray(img, dtype=np.float32) + noise.reshape(img.shape)


def build_intensity_transforms_2d(cfg: AugmentConfig) -> list:
    """nnU-Net's intensity set, in the 3D order: noise, blur, brightness, contrast, gamma, shift."""
    return [
        GaussianNoise(value_range=(0.0, cfg.noise_std), p=cfg.noise_prob),
        GaussianBlurInPlane(value_range=cfg.blur_sigma, p=cfg.blur_prob),
        MultiplyIntensity(value_range=cfg.brightness_range, p=cfg.brightness_prob),
        ContrastAroundMean(value_range=cfg.contrast_range, p=cfg.contrast_prob),
        GammaInRange(value_range=cfg.gamma_range, p=cfg.gamma_prob),
        ShiftIntensity(value_range=(-cfg.intensity_shift, cfg.intensity_shift), p=cfg.intensity_shift_prob),
    ]


def build_train_transforms_2d(cfg: AugmentConfig, patch_size: Sequence[int] | str) -> A.Compose:
    """The same knobs as the 3D pipeline, applied with albumentations to one slice or image."""
    height, width = resolved_patch_size(patch_size)
    return A.Compose([
        A.PadIfNeeded(min_height=height, min_width=width, border_mode=0, fill=0, fill_mask=0),
        A.RandomCrop(height=height, width=width),
        A.HorizontalFlip(p=cfg.flip_prob),
        A.VerticalFlip(p=cfg.flip_prob),
        A.Affine(rotate=(-cfg.rotate_range_deg, cfg.rotate_range_deg), p=cfg.rotate_prob,
                 border_mode=0, fill=0, fill_mask=0),
        A.Affine(scale=(1 - cfg.scale_range, 1 + cfg.scale_range), p=cfg.scale_prob,
                 border_mode=0, fill=0, fill_mask=0),
        *build_intensity_transforms_2d(cfg),
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


def build_random_transforms_2d(cfg: AugmentConfig, patch_size: Sequence[int] | str) -> list:
    """The 2D random part as a list, like the 3D builder (nothing needs caching in 2D)."""
    return [AlbumentationsD(build_train_transforms_2d(cfg, patch_size))]
