"""Augmentation pipelines built from params: MONAI dictionary transforms (3D), albumentations (2D)."""

from __future__ import annotations

from segflow.config import AUTO, AugmentConfig


def resolved_patch_size(cfg: AugmentConfig) -> list[int]:
    """`cfg.patch_size` as a list; transforms need the plan's value, never the `auto` placeholder."""
    if cfg.patch_size == AUTO:
        raise ValueError("augment.patch_size is still 'auto': resolve params with the plan "
                         "(artifacts/plan/plan.json) before building transforms")
    return list(cfg.patch_size)


def build_training_transforms(cfg: AugmentConfig, spatial_dims: int) -> tuple[list, list]:
    """(cached, random) transform lists for `spatial_dims`; cached ones run once per case."""
    if spatial_dims == 3:
        from segflow.transforms.three_d import build_cached_transforms, build_random_transforms

        return build_cached_transforms(cfg), build_random_transforms(cfg)
    from segflow.transforms.two_d import build_random_transforms_2d

    return [], build_random_transforms_2d(cfg)
