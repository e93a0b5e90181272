"""Per-case preprocessing shared by training, evaluation and prediction.

The same `normalise_image` runs on cached training cases and on a new volume at predict time,
so a model never sees intensities prepared two different ways.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segflow.data import formats


@dataclass(frozen=True)
class Volume:
    """A case ready for the network: channel-first arrays plus what is needed to write back."""

    image: np.ndarray  # (C, *spatial) float32, normalised
    label: np.ndarray | None  # (1, *spatial) uint8
    affine: np.ndarray


def normalise_image(image: np.ndarray) -> np.ndarray:
    """Per-case z-score (intensity ranges differ by orders of magnitude between cases)."""
    image = np.asarray(image, dtype=np.float32)
    std = float(image.std())
    return (image - float(image.mean())) / (std if std > 1e-8 else 1.0)


def to_label(array: np.ndarray, label_map: dict[int, int] | None = None) -> np.ndarray:
    """Labels as uint8 class indices: float-stored integral labels rounded (validated upstream),
    raw mask values (e.g. {0, 255}) mapped through `label_map`."""
    labels = np.rint(np.asarray(array)).astype(np.int64)
    if label_map:
        lookup = np.zeros(max(max(label_map), int(labels.max())) + 1, dtype=np.uint8)
        for raw, target in label_map.items():
            lookup[raw] = target
        labels = lookup[labels]
    return labels.astype(np.uint8)


def is_planar(path: Path) -> bool:
    """PNG/TIF: a 2D image file (see segflow.data.formats)."""
    return formats.is_planar(Path(path).name)


def load_planar(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A 2D image file as (H, W) or (H, W, C) with an identity affine."""
    import cv2

    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise ValueError(f"{path}: not a readable image file")
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_BGR2RGB if array.shape[2] == 3 else cv2.COLOR_BGRA2RGBA)
    return array, np.eye(3)


def load_nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    image = nib.load(str(path))
    return np.asanyarray(image.dataobj), image.affine


def load_array(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """NIfTI or a 2D image file, with its affine."""
    return load_planar(path) if is_planar(path) else load_nifti(path)


def channels_first(image: np.ndarray, planar: bool) -> np.ndarray:
    """NIfTI 4D stores channels last (x, y, z, c); 2D colour images too (h, w, c)."""
    if image.ndim == (3 if planar else 4):
        return np.moveaxis(image, -1, 0)
    return image[None]


def load_case(image_path: Path, label_path: Path | None = None,
              label_map: dict[int, int] | None = None) -> Volume:
    """Read an image (and label) and prepare it for the network."""
    image, affine = load_array(image_path)
    normalised = np.stack([normalise_image(c) for c in channels_first(image, is_planar(image_path))])
    label = to_label(load_array(label_path)[0], label_map)[None] if label_path else None
    return Volume(normalised, label, affine)


def save_volume(path: Path, volume: Volume) -> None:
    """Write one preprocessed case (uncompressed: loading speed matters more than disk)."""
    from segflow.io import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, image=volume.image, label=volume.label, affine=volume.affine)


def read_volume(path: Path) -> Volume:
    with np.load(path) as data:
        return Volume(data["image"], data["label"], data["affine"])
