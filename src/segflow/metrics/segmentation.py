"""Per-case, per-class Dice and HD95 through MONAI's metric classes."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from segflow.data.regions import Regions


def one_hot(labels: np.ndarray, n_classes: int) -> torch.Tensor:
    """(*spatial) integer map -> (1, K, *spatial) one-hot float tensor."""
    tensor = torch.as_tensor(labels.astype(np.int64))
    return torch.nn.functional.one_hot(tensor, n_classes).movedim(-1, 0)[None].float()


def without_ignored(prediction: np.ndarray, truth: np.ndarray, ignore_label: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Both maps with the voxels the truth labels `ignore_label` set to background, so they count
    for no class (nnU-Net's ignore label); unchanged when there is none."""
    if ignore_label is None:
        return prediction, truth
    ignored = np.asarray(truth) == ignore_label
    return np.where(ignored, 0, prediction), np.where(ignored, 0, truth)


def dice_per_class(prediction: np.ndarray, truth: np.ndarray, n_classes: int) -> list[float]:
    """Dice of each foreground class (1..K-1); 1.0 when both are empty (MONAI's ignore_empty=False)."""
    from monai.metrics import DiceMetric

    metric = DiceMetric(include_background=False, reduction="none", ignore_empty=False)
    return [float(v) for v in metric(one_hot(prediction, n_classes), one_hot(truth, n_classes))[0]]


def hd95_per_class(prediction: np.ndarray, truth: np.ndarray, n_classes: int,
                   spacing: list[float] | None = None) -> list[float]:
    """95th-percentile Hausdorff distance (in spacing units) per foreground class; NaN if a side is empty."""
    from monai.metrics import HausdorffDistanceMetric

    metric = HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")
    with warnings.catch_warnings():  # MONAI warns (and returns nan/inf) for empty masks
        warnings.simplefilter("ignore")
        values = metric(one_hot(prediction, n_classes), one_hot(truth, n_classes), spacing=spacing)[0]
    return [float(v) if np.isfinite(float(v)) else float("nan") for v in values]


def dice_per_region(prediction: np.ndarray, truth: np.ndarray, regions: Regions) -> list[float]:
    """Dice of each region (segflow.data.regions) between two label maps; 1.0 when both are empty."""
    from monai.metrics import DiceMetric

    metric = DiceMetric(include_background=True, reduction="none", ignore_empty=False)
    as_tensor = [torch.as_tensor(regions.masks(m)[None]).float() for m in (prediction, truth)]
    return [float(v) for v in metric(*as_tensor)[0]]


def hd95_per_region(prediction: np.ndarray, truth: np.ndarray, regions: Regions, spacing: list[float] | None = None
                    ) -> list[float]:
    """95th-percentile Hausdorff distance per region; NaN where a side is empty."""
    from monai.metrics import HausdorffDistanceMetric

    metric = HausdorffDistanceMetric(include_background=True, percentile=95, reduction="none")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        values = metric(*[torch.as_tensor(regions.masks(m)[None]).float() for m in (prediction, truth)],
                        spacing=spacing)[0]
    return [float(v) if np.isfinite(float(v)) else float("nan") for v in values]


def dice_per_output(prediction: np.ndarray, truth: np.ndarray, n_outputs: int, regions: Regions | None = None) -> list[float]:
    """Dice per network output: per foreground class (n_outputs classes), or per region."""
    return dice_per_region(prediction, truth, regions) if regions else dice_per_class(prediction, truth, n_outputs)
