"""Keep-largest-connected-component postprocessing, chosen per class as nnU-Net does: only for
the classes where it raises the mean validation Dice.

Connected components come from scipy.ndimage with full connectivity (diagonal neighbours
connect), which is what MONAI's KeepLargestConnectedComponent does by default; MONAI's CPU path
needs scikit-image, which segflow does not install.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

RULE = ("A class keeps only its largest connected component when that raises its mean Dice over "
        "the validation cases (strictly; cases with undefined Dice skipped).")


def largest_component_mask(mask: np.ndarray) -> np.ndarray:
    """Boolean mask of the largest connected component of `mask` (ties: the first found)."""
    from scipy import ndimage

    full_connectivity = ndimage.generate_binary_structure(mask.ndim, mask.ndim)
    components, count = ndimage.label(mask, structure=full_connectivity)
    if count <= 1:
        return components > 0
    sizes = np.bincount(components.ravel())[1:]  # [0] is the background
    return components == int(np.argmax(sizes)) + 1


def keep_largest_component(labels: np.ndarray, classes: list[int]) -> np.ndarray:
    """Label map (*spatial) with every class in `classes` cut down to its largest component.

    Classes are handled independently; removed voxels become background (0).
    """
    out = np.array(labels, copy=True)
    for label in classes:
        mask = labels == label
        out[mask & ~largest_component_mask(mask)] = 0
    return out


def mean_or_none(values: pd.Series) -> float | None:
    """Mean without NaNs; None (JSON null) when no value is defined."""
    mean = float(values.mean(skipna=True))
    return None if math.isnan(mean) else mean


def choose_postprocessing(per_case: pd.DataFrame, class_names: list[str]) -> dict:
    """Decide per class whether keeping the largest component helps, from per-case Dice.

    Args:
        per_case: one row per validation case, columns `dice_<name>` (raw prediction) and
            `dice_<name>_lcc` (after keeping the largest component of that class).
        class_names: foreground class names; class i (1-based) is `class_names[i - 1]`.

    Returns:
        JSON-able decision: the 1-based class indices to post-process, mean Dice per class before
        and with the chosen option, and the rule in words.
    """
    chosen, before, after = [], {}, {}
    for index, name in enumerate(class_names, start=1):
        raw, lcc = mean_or_none(per_case[f"dice_{name}"]), mean_or_none(per_case[f"dice_{name}_lcc"])
        helps = raw is not None and lcc is not None and lcc > raw
        if helps:
            chosen.append(index)
        before[name], after[name] = raw, lcc if helps else raw
    return {"keep_largest_component": chosen, "dice_before": before, "dice_after": after, "rule": RULE}


def apply_postprocessing(labels: np.ndarray, decision: dict | None) -> np.ndarray:
    """Apply a `choose_postprocessing` decision; None or no chosen class returns `labels` as is."""
    classes = (decision or {}).get("keep_largest_component") or []
    return keep_largest_component(labels, classes) if classes else labels
