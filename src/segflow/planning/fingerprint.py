"""Dataset fingerprint: the measurements every planning rule starts from (nnU-Net's
`dataset_fingerprint.json`).

Spacings and shapes of every kept case, foreground intensity statistics per channel (on voxels
labelled > 0, sampled to at most 10,000 per case with a fixed seed, so a large dataset costs no
more memory than a small one and the result is reproducible) and class frequencies.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from segflow.data import preprocess
from segflow.data.manifest import case_image_paths

FORMAT = "segflow-fingerprint/1"
SAMPLES_PER_CASE = 10_000
SAMPLING_SEED = 1234  # nnU-Net's


@dataclass(frozen=True)
class CaseFacts:
    """What one case contributes to the fingerprint."""

    spacing: list[float]
    shape: list[int]
    foreground: list[np.ndarray]  # per channel: sampled foreground intensities
    class_voxels: dict[int, int]


def sample_foreground(image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """Per channel, up to SAMPLES_PER_CASE intensities at voxels labelled > 0 (the same voxels
    for every channel)."""
    where = np.flatnonzero(label.reshape(-1) > 0)
    if where.size > SAMPLES_PER_CASE:
        where = np.sort(rng.choice(where, SAMPLES_PER_CASE, replace=False))
    return [channel.reshape(-1)[where].astype(np.float64) for channel in image]


def describe_case(image_paths: list[Path], label_path: Path, label_map: dict[int, int] | None,
                  rng: np.random.Generator) -> CaseFacts:
    image, _, spacing = preprocess.load_channels(image_paths)
    label = preprocess.read_label(label_path, label_map)[0]
    if label.shape != image.shape[1:]:
        raise ValueError(f"{label_path}: label shape {list(label.shape)} differs from the image's "
                         f"{list(image.shape[1:])}")
    values, counts = np.unique(label, return_counts=True)
    return CaseFacts(
        spacing=list(spacing),
        shape=[int(n) for n in image.shape[1:]],
        foreground=sample_foreground(image, label, rng),
        class_voxels={int(v): int(c) for v, c in zip(values, counts, strict=True)},
    )


def intensity_statistics(values: np.ndarray) -> dict | None:
    """nnU-Net's foreground statistics of one channel; None without foreground voxels."""
    if values.size == 0:
        return None
    low, median, high = np.percentile(values, [0.5, 50.0, 99.5])
    return {"mean": float(values.mean()), "std": float(values.std()), "median": float(median),
            "percentile_00_5": float(low), "percentile_99_5": float(high),
            "min": float(values.min()), "max": float(values.max())}


def class_frequencies(cases: list[CaseFacts], labels: dict[str, str]) -> dict:
    """Per class: its name, share of all voxels and share of cases that contain it."""
    total = sum(sum(case.class_voxels.values()) for case in cases)
    classes = sorted({int(k) for k in labels} | {v for case in cases for v in case.class_voxels})
    return {str(c): {
        "name": labels.get(str(c), ""),
        "voxel_fraction": sum(case.class_voxels.get(c, 0) for case in cases) / total if total else 0.0,
        "case_fraction": sum(case.class_voxels.get(c, 0) > 0 for case in cases) / len(cases) if cases else 0.0,
    } for c in classes}


def geometry_summary(name: str, values: list[list[float]]) -> dict:
    """Per-axis median, min and max of case spacings (mm) or shapes (voxels, rounded)."""
    array = np.asarray(values, dtype=np.float64)
    summary = {f"{stat}_{name}": getattr(np, stat)(array, axis=0).tolist() for stat in ("median", "min", "max")}
    if name == "shape":
        summary = {key: [int(round(v)) for v in axis_values] for key, axis_values in summary.items()}
    return summary


def compute_fingerprint(data_root: Path, manifest: pd.DataFrame, kept: list[str], labels: dict[str, str],
                        modality: dict[str, str], label_map: dict[int, int] | None, spatial_dims: int,
                        regions: dict | None = None) -> dict:
    """Measure the kept cases; a JSON-able dict (see the module docstring)."""
    if not kept:
        raise ValueError("no kept cases to fingerprint (validate kept none)")
    rows = manifest.drop_duplicates("case_id").set_index("case_id")
    rng = np.random.default_rng(SAMPLING_SEED)
    cases = [describe_case(case_image_paths(data_root, rows.loc[case_id]), data_root / rows.loc[case_id, "label"],
                           label_map, rng) for case_id in kept]
    dims = {len(case.shape) for case in cases}
    if dims != {spatial_dims}:
        raise ValueError(f"model.spatial_dims is {spatial_dims} but the cases are {sorted(dims)}D")
    n_channels = len(cases[0].foreground)
    return {
        "format": FORMAT,
        "n_cases": len(cases),
        "spatial_dims": spatial_dims,
        "n_channels": n_channels,
        "modality": {str(k): v for k, v in modality.items()},
        "labels": {str(k): v for k, v in labels.items()},  # declared classes: one network output each
        "regions": regions,  # or, region-based: one sigmoid output per region (labels[1:] name them)
        "case_ids": list(kept),
        "spacings": [case.spacing for case in cases],
        "shapes": [case.shape for case in cases],
        **geometry_summary("spacing", [case.spacing for case in cases]),
        **geometry_summary("shape", [case.shape for case in cases]),
        "foreground_intensity": {str(c): intensity_statistics(np.concatenate([case.foreground[c] for case in cases]))
                                 for c in range(n_channels)},
        "class_frequencies": class_frequencies(cases, labels),
    }


def task_from_fingerprint(fingerprint: dict) -> dict:
    """What a model of this dataset takes and gives: spatial dims, channels (with their modality),
    classes or regions. The registry keeps one champion per dataset name and task."""
    return {"spatial_dims": fingerprint["spatial_dims"], "n_channels": fingerprint["n_channels"],
            "modality": fingerprint.get("modality") or {}, "labels": fingerprint["labels"],
            "regions": fingerprint.get("regions")}


def training_ranges_from_fingerprint(fingerprint: dict) -> dict:
    """What `segflow predict` compares an input with: per-axis min and max of the training cases'
    shape (voxels) and spacing (mm). Register stores it in the model file as info["training_ranges"]."""
    return {"n_cases": fingerprint["n_cases"],
            "shape": {"min": fingerprint["min_shape"], "max": fingerprint["max_shape"]},
            "spacing": {"min": fingerprint["min_spacing"], "max": fingerprint["max_spacing"]}}
