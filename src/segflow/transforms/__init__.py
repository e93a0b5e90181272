"""Augmentation pipelines built from params: MONAI dictionary transforms (3D), albumentations (2D)."""

from __future__ import annotations

from collections.abc import Sequence

from segflow.config import AUTO, AugmentConfig


def resolved_patch_size(patch_size: Sequence[int] | str) -> list[int]:
    """`preprocess.patch_size` as a list; transforms need the plan's value, never `auto`."""
    if patch_size == AUTO:
        raise ValueError("preprocess.patch_size is still 'auto': resolve params with the plan "
                         "(artifacts/plan/plan.json) before building transforms")
    return list(patch_size)


def build_training_transforms(cfg: AugmentConfig, patch_size: Sequence[int] | str,
                              spatial_dims: int, ignore_label: int | None = None) -> tuple[list, list]:
    """(cached, random) transform lists for `spatial_dims` patches of `patch_size`; cached ones
    run once per case. Foreground-centred patches never centre on `ignore_label` voxels."""
    if spatial_dims == 3:
        from segflow.transforms.three_d import build_cached_transforms, build_random_transforms

        return build_cached_transforms(patch_size, ignore_label), build_random_transforms(cfg, patch_size)
    from segflow.transforms.two_d import build_random_transforms_2d

    return [], build_random_transforms_2d(cfg, patch_size)


def build_streaming_transforms(cfg: AugmentConfig, patch_size: Sequence[int] | str, spatial_dims: int) -> list:
    """The random transforms for items that name cached `.npy` files: a patch read from disk
    (segflow.transforms.patches), then the same augmentation as `build_training_transforms` (the
    2D pipeline's pad-and-crop leaves a patch-sized image as it is)."""
    from segflow.transforms.patches import PatchFromDisk

    reader = PatchFromDisk(resolved_patch_size(patch_size), cfg.foreground_oversample)
    if spatial_dims == 3:
        from segflow.transforms.three_d import build_random_transforms

        return [reader, *build_random_transforms(cfg, patch_size, crop=False)]
    from segflow.transforms.two_d import build_random_transforms_2d

    return [reader, *build_random_transforms_2d(cfg, patch_size)]
