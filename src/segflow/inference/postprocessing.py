"""Keep-largest-connected-component postprocessing, chosen per class on the validation cases.

nnU-Net keeps it for any class whose mean Dice it raises; a gain of 0.00004 then ships a step that
can delete whole structures on new data (on thin networks such as membranes, a quarter of the
predicted foreground). segflow keeps it only with the champion gate's rigour: a minimum paired gain,
a one-sided Wilcoxon test, and a cap on the share of predicted foreground it removes (RULE).

Connected components come from scipy.ndimage with full connectivity (diagonal neighbours
connect), which is what MONAI's KeepLargestConnectedComponent does by default; MONAI's CPU path
needs scikit-image, which segflow does not install.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

RULE = ("A class keeps only its largest connected component when, over the validation cases, its "
        "mean Dice gain exceeds evaluate.postprocess_min_gain, a one-sided paired Wilcoxon test gives "
        "p <= evaluate.postprocess_max_p_value, and it removes at most evaluate.postprocess_max_removed "
        "of the class's predicted foreground (a structure that other metrics would count is never deleted "
        "for a negligible Dice gain).")
VOXELS = "voxels_{}"  # per-case column: the class's predicted voxels (raw; `_lcc` after the cleaning)


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


@dataclass(frozen=True)
class Rule:
    """When keeping the largest component is worth it (evaluate.postprocess_* in params.yaml)."""

    min_gain: float
    max_p_value: float
    max_removed: float


def class_evidence(per_case: pd.DataFrame, name: str, rule: Rule) -> dict:
    """The paired evidence for cleaning one class: mean Dice gain with its 95% CI, the one-sided
    Wilcoxon p, the share of the predicted foreground removed, the verdict and why."""
    from segflow.metrics.statistics import paired_bootstrap_difference, paired_wilcoxon

    raw, lcc = per_case[f"dice_{name}"].to_numpy(float), per_case[f"dice_{name}_lcc"].to_numpy(float)
    paired = ~(np.isnan(raw) | np.isnan(lcc))
    gain = paired_bootstrap_difference(lcc[paired], raw[paired])
    p_value = paired_wilcoxon(lcc[paired], raw[paired], alternative="greater")["p_value"]
    removed = removed_share(per_case, name)
    evidence = {"n_cases": int(paired.sum()), "gain": _round(gain["mean"]),
                "gain_ci95": [_round(gain["low"]), _round(gain["high"])], "p_value": _round(p_value, 6),
                "removed_share": _round(removed)}
    chosen, reason = verdict(evidence, rule)
    return {**evidence, "chosen": chosen, "reason": reason}


def removed_share(per_case: pd.DataFrame, name: str) -> float | None:
    """Share of the class's predicted voxels (over all cases) that keeping the largest component
    deletes; None when the table has no voxel counts or nothing was predicted."""
    column = VOXELS.format(name)
    if column not in per_case or column + "_lcc" not in per_case:
        return None
    before = float(per_case[column].sum())
    return None if before == 0 else 1.0 - float(per_case[column + "_lcc"].sum()) / before


def verdict(evidence: dict, rule: Rule) -> tuple[bool, str]:
    """(chosen, reason) for one class's evidence under `rule`."""
    gain, p_value, removed = evidence["gain"], evidence["p_value"], evidence["removed_share"]
    measured = (f"gain {_signed(gain)} (95% CI {_signed(evidence['gain_ci95'][0])} to "
                f"{_signed(evidence['gain_ci95'][1])}) on {evidence['n_cases']} cases, p={p_value}, "
                f"removes {_percent(removed)} of the predicted foreground")
    if gain is None or gain <= rule.min_gain:
        return False, f"not kept: {measured}; needs a gain above evaluate.postprocess_min_gain {rule.min_gain}"
    if p_value is None or p_value > rule.max_p_value:
        return False, f"not kept: {measured}; p above evaluate.postprocess_max_p_value {rule.max_p_value}"
    if removed is not None and removed > rule.max_removed:
        return False, (f"not kept: {measured}; removes more than evaluate.postprocess_max_removed "
                       f"{_percent(rule.max_removed)}")
    return True, f"kept: {measured}"


def choose_postprocessing(per_case: pd.DataFrame, class_names: list[str], rule: Rule) -> dict:
    """Decide per class whether keeping the largest component helps, from paired per-case scores.

    Args:
        per_case: one row per validation case, columns `dice_<name>` (raw prediction),
            `dice_<name>_lcc` (after keeping the largest component of that class) and, for the
            removed share, `voxels_<name>` and `voxels_<name>_lcc`.
        class_names: foreground class names; class i (1-based) is `class_names[i - 1]`.

    Returns:
        JSON-able decision: the 1-based class indices to post-process, mean Dice per class before
        and with the chosen option, the evidence per class, and the rule in words.
    """
    chosen, before, after, evidence = [], {}, {}, {}
    for index, name in enumerate(class_names, start=1):
        evidence[name] = class_evidence(per_case, name, rule)
        raw, lcc = mean_or_none(per_case[f"dice_{name}"]), mean_or_none(per_case[f"dice_{name}_lcc"])
        if evidence[name]["chosen"]:
            chosen.append(index)
        before[name], after[name] = raw, lcc if evidence[name]["chosen"] else raw
    return {"keep_largest_component": chosen, "dice_before": before, "dice_after": after, "classes": evidence,
            "rule": RULE}


def describe_decision(decision: dict | None) -> list[str]:
    """One line per class: kept or not, and the evidence (for the model card and the stage's log)."""
    classes = (decision or {}).get("classes") or {}
    if not classes:
        return [f"none ({(decision or {}).get('rule', 'no decision recorded')})"]
    return [f"{name}: {evidence['reason']}" for name, evidence in classes.items()]


def _round(value, digits: int = 5):
    return None if value is None or math.isnan(value) else round(float(value), digits)


def _signed(value) -> str:
    return "n/a" if value is None else f"{value:+.4f}"


def _percent(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def apply_postprocessing(labels: np.ndarray, decision: dict | None) -> np.ndarray:
    """Apply a `choose_postprocessing` decision; None or no chosen class returns `labels` as is."""
    classes = (decision or {}).get("keep_largest_component") or []
    return keep_largest_component(labels, classes) if classes else labels
