"""Per-case preprocessing shared by training, evaluation and prediction.

The same `load_case` runs on cached training cases and on a new volume at predict time, so a
model never sees intensities prepared two different ways. Without a plan it z-scores each case
on its own grid; with the plan's `Preprocessing` it normalises as planned (per-case z-score, or
CT clipping plus the dataset's foreground z-score) and resamples to the target spacing, and
`restore_to_shape` brings predictions back to the input grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, model_validator

from segflow.data import formats
from segflow.data.images import read_image

if TYPE_CHECKING:
    import torch


class ChannelNormalisation(BaseModel):
    """How one image channel is normalised: `zscore` per case, or `ct`: clip to `clip` then
    subtract the dataset's foreground `mean` and divide by its `std`."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    scheme: Literal["zscore", "ct"]
    clip: tuple[float, float] | None = None
    mean: float | None = None
    std: float | None = None

    @model_validator(mode="after")
    def _ct_has_statistics(self) -> ChannelNormalisation:
        if self.scheme == "ct" and (self.clip is None or self.mean is None or self.std is None):
            raise ValueError("the ct scheme needs clip, mean and std")
        return self


class Preprocessing(BaseModel):
    """What a case needs before the network sees it; a plain dict inside model files."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    target_spacing: list[float]
    normalisation: list[ChannelNormalisation]


# A case whose spacing is within 1% of the target on every axis is used as it is: resampling
# would only blur it (MSD Hippocampus is 1 mm everywhere and never resamples).
SPACING_TOLERANCE = 0.01


@dataclass(frozen=True)
class Volume:
    """A case ready for the network: channel-first arrays plus what is needed to write back.

    `affine` and `original_shape` describe the input grid; when the case was resampled to the
    plan's spacing, `image`/`label` have another shape and predictions go back through
    `restore_to_shape(probabilities, original_shape)`. `spacing` is the voxel size of `image`.
    """

    image: np.ndarray  # (C, *spatial) float32, normalised
    label: np.ndarray | None  # (1, *spatial) uint8
    affine: np.ndarray
    original_shape: tuple[int, ...] | None = None  # spatial shape on the input grid (plan given)
    spacing: tuple[float, ...] | None = None  # mm per axis of `image` (target spacing once resampled)


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
    """PNG/TIF/BMP: a 2D image file (see segflow.data.formats)."""
    return formats.is_planar(Path(path).name)


def read_label(path: Path, label_map: dict[int, int] | None = None) -> np.ndarray:
    """A label file as (1, *spatial) uint8 class indices."""
    return to_label(read_image(path).array, label_map)[None]


def load_channels(image_path: Path | Sequence[Path]) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """A case's image as (C, *spatial), from one file (4D NIfTI, RGB) or one file per channel
    (nnU-Net's `_0000`, `_0001`, ...), with the first file's affine and spacing (mm per axis;
    2D image files carry none: 1.0)."""
    paths = [Path(image_path)] if isinstance(image_path, (str, Path)) else [Path(p) for p in image_path]
    loaded = [read_image(path) for path in paths]
    channels = [f.channels_first() for f in loaded]
    image = np.concatenate(channels) if len(channels) > 1 else channels[0]
    return image, loaded[0].affine, tuple(loaded[0].spacing)


def needs_resampling(spacing: Sequence[float], target: Sequence[float]) -> bool:
    return any(abs(s - t) > SPACING_TOLERANCE * t for s, t in zip(spacing, target, strict=True))


def resampled_shape(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]) -> list[int]:
    """Spatial shape covering the same field of view at `target` spacing."""
    return [max(int(round(n * s / t)), 1) for n, s, t in zip(shape, spacing, target, strict=True)]


def _zoom(array: np.ndarray, shape: Sequence[int], order: int) -> np.ndarray:
    """Resample one spatial array to `shape`; voxel areas aligned as torch's align_corners=False,
    so `restore_to_shape` undoes it on the same grid."""
    from scipy import ndimage

    factors = [new / old for new, old in zip(shape, array.shape, strict=True)]
    return ndimage.zoom(array, factors, order=order, mode="nearest", grid_mode=True)


def resample_image(image: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """(C, *spatial) image to `shape`, cubic spline per channel (as nnU-Net)."""
    return np.stack([_zoom(channel, shape, order=3) for channel in image]).astype(np.float32)


def resample_label(label: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """(1, *spatial) label to `shape` by nearest neighbour, so classes stay integral."""
    return _zoom(label[0], shape, order=0).astype(np.uint8)[None]


def normalise_channel(channel: np.ndarray, scheme: ChannelNormalisation) -> np.ndarray:
    """`zscore`: per case. `ct`: clip to the dataset's foreground 0.5-99.5 percentiles, then the
    dataset's foreground z-score, so Hounsfield units keep their meaning across cases."""
    if scheme.scheme == "zscore":
        return normalise_image(channel)
    clipped = np.clip(np.asarray(channel, dtype=np.float32), *scheme.clip)
    std = scheme.std if scheme.std and scheme.std > 1e-8 else 1.0
    return ((clipped - scheme.mean) / std).astype(np.float32)


def normalise_channels(image: np.ndarray, normalisation: Sequence[ChannelNormalisation]) -> np.ndarray:
    if len(normalisation) != image.shape[0]:
        raise ValueError(f"the plan normalises {len(normalisation)} channel(s) but the image has {image.shape[0]}")
    return np.stack([normalise_channel(c, scheme) for c, scheme in zip(image, normalisation, strict=True)])


def describe_preprocessing(preprocessing: dict | None) -> str:
    """One line on what segflow does to an image before the network sees it (for the exported
    bundle's metadata and the registry's model card). `preprocessing`: a model file's (a plain
    dict), None for a model file from before plans."""
    if not preprocessing:
        return "per-case z-score intensity normalisation, no resampling"
    schemes = ", ".join(f"channel {i}: {c['scheme']}" for i, c in enumerate(preprocessing["normalisation"]))
    return f"resample to spacing {preprocessing['target_spacing']}, normalise intensities ({schemes})"


def as_preprocessing(preprocessing: Preprocessing | dict) -> Preprocessing:
    """The plan's preprocessing, also from the plain dict stored inside a model file."""
    return preprocessing if isinstance(preprocessing, Preprocessing) else Preprocessing.model_validate(preprocessing)


def load_case(image_path: Path | Sequence[Path], label_path: Path | None = None,
              label_map: dict[int, int] | None = None,
              preprocessing: Preprocessing | dict | None = None) -> Volume:
    """Read an image (and label) and prepare it for the network (see `prepare_image`)."""
    image, affine, spacing = load_channels(image_path)
    label = read_label(label_path, label_map) if label_path else None
    first = Path(image_path) if isinstance(image_path, (str, Path)) else Path(image_path[0])
    return prepare_image(image, affine, spacing, preprocessing, label, source=first)


def prepare_image(image: np.ndarray, affine: np.ndarray, spacing: Sequence[float],
                  preprocessing: Preprocessing | dict | None = None, label: np.ndarray | None = None,
                  source: Path | str = "the image") -> Volume:
    """An image already read, (C, *spatial), made ready for the network: without `preprocessing`
    per-case z-score on the input grid; with the plan's, its normalisation, then resampling to its
    target spacing where the case differs by >1 %. The training cache and `segflow predict` both
    prepare through here, so a new image meets the network exactly as the training cases did."""
    shape, spacing = tuple(int(n) for n in image.shape[1:]), tuple(spacing)
    if preprocessing is None:
        return Volume(np.stack([normalise_image(c) for c in image]), label, affine, spacing=spacing)
    plan = as_preprocessing(preprocessing)
    if len(plan.target_spacing) != len(shape):
        raise ValueError(f"{source}: {len(shape)}D image but the plan's target spacing is {plan.target_spacing}")
    image = normalise_channels(image, plan.normalisation)
    if needs_resampling(spacing, plan.target_spacing):
        target_shape = resampled_shape(shape, spacing, plan.target_spacing)
        image = resample_image(image, target_shape)
        label = resample_label(label, target_shape) if label is not None else None
        spacing = tuple(plan.target_spacing)
    return Volume(image, label, affine, shape, spacing)


def restore_to_shape(probabilities: torch.Tensor | np.ndarray, shape: Sequence[int]) -> torch.Tensor | np.ndarray:
    """Class probabilities (K, *spatial) predicted at the plan's spacing, linearly resampled to
    the input grid's `shape` (take the argmax after this, not before: it keeps thin structures).
    Returns the input's type; float32."""
    import torch
    import torch.nn.functional as F

    shape = [int(n) for n in shape]
    as_numpy = isinstance(probabilities, np.ndarray)
    tensor = torch.as_tensor(probabilities).float()
    if list(tensor.shape[1:]) != shape:
        mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(shape)]
        tensor = F.interpolate(tensor[None], size=shape, mode=mode, align_corners=False)[0]
    return tensor.numpy() if as_numpy else tensor
