"""Training patches read straight from the preprocessed cache's memory-mapped arrays.

For a dataset too large to hold in memory the loader does not cache whole cases: this transform
draws a patch position (centred on a stored foreground voxel with probability
`foreground_oversample`, else anywhere in the case, as nnU-Net samples) and reads just that
window from the `.npy` files, zero-padding axes where the case is smaller than the patch. Memory
then holds a batch of patches, whatever the number or size of the cases.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from monai.transforms import Randomizable


def window_starts(shape: Sequence[int], patch: Sequence[int], centre: Sequence[int]) -> list[int]:
    """Per axis, where a patch around `centre` starts, kept inside the case (0 where it is smaller)."""
    return [int(np.clip(c - p // 2, 0, max(n - p, 0))) for n, p, c in zip(shape, patch, centre, strict=True)]


class PatchFromDisk(Randomizable):
    """{"image": path, "label": path, "foreground": path} -> {"image": (C, *patch) float32,
    "label": (1, *patch) uint8}, read from memory maps (only the window's pages)."""

    def __init__(self, patch_size: Sequence[int], foreground_oversample: float):
        self.patch = [int(p) for p in patch_size]
        self.foreground = float(foreground_oversample)

    def randomize(self, shape: Sequence[int], locations: np.ndarray) -> list[int]:
        if len(locations) and self.R.random_sample() < self.foreground:
            return [int(v) for v in locations[self.R.randint(len(locations))]]
        return [int(self.R.randint(n)) for n in shape]

    def __call__(self, item: dict) -> dict:
        image = np.load(item["image"], mmap_mode="r")
        label = np.load(item["label"], mmap_mode="r")
        shape = image.shape[1:]
        starts = window_starts(shape, self.patch, self.randomize(shape, np.load(item["foreground"])))
        window = tuple(slice(s, s + p) for s, p in zip(starts, self.patch, strict=True))
        read_image, read_label = image[(slice(None), *window)], label[(slice(None), *window)]
        # Axes shorter than the patch are padded on both sides, as SpatialPad pads cached cases.
        offsets = [(p - n) // 2 for p, n in zip(self.patch, read_image.shape[1:], strict=True)]
        placed = tuple(slice(o, o + n) for o, n in zip(offsets, read_image.shape[1:], strict=True))
        patch_image = np.zeros((image.shape[0], *self.patch), np.float32)
        patch_label = np.zeros((1, *self.patch), np.uint8)
        patch_image[(slice(None), *placed)] = read_image
        patch_label[(slice(None), *placed)] = read_label
        return {**item, "image": patch_image, "label": patch_label}
