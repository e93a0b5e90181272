"""Per-case preprocessing shared by training, evaluation and prediction.

The same `normalise_image` runs on cached training cases and on a new volume at predict time,
so a model never sees intensities prepared two different ways.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


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


def to_label(array: np.ndarray) -> np.ndarray:
    """Labels as uint8, rounding float-stored integral labels (validated upstream)."""
    return np.rint(np.asarray(array)).astype(np.uint8)


def load_nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    image = nib.load(str(path))
    return np.asanyarray(image.dataobj), image.affine


def load_case(image_path: Path, label_path: Path | None = None) -> Volume:
    """Read a NIfTI image (and label) and prepare it for the network."""
    image, affine = load_nifti(image_path)
    if image.ndim == 4:  # (x, y, z, channel) as stored by NIfTI -> channel first
        channels = np.moveaxis(image, -1, 0)
    else:
        channels = image[None]
    normalised = np.stack([normalise_image(c) for c in channels])
    label = to_label(load_nifti(label_path)[0])[None] if label_path else None
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
