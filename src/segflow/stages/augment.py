"""augment: preprocess kept cases as the plan says (spacing, normalisation) into a training cache,
and preview the augmentation pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from segflow.config import Params
from segflow.data.preprocess import load_case, read_volume, save_volume
from segflow.io import read_json, write_json
from segflow.paths import Paths


def preprocess_cases(data_root: Path, manifest: pd.DataFrame, kept: list[str], dest: Path,
                     label_map: dict[int, int] | None = None, preprocessing=None) -> dict:
    """Resample and normalise each kept case once and store it; returns the cache index."""
    rows = manifest.drop_duplicates("case_id").set_index("case_id")
    index = {}
    for case_id in kept:
        row = rows.loc[case_id]
        volume = load_case(data_root / row["image"], data_root / row["label"], label_map, preprocessing)
        save_volume(dest / f"{case_id}.npz", volume)
        spacing = volume.spacing or [float(s) for s in json.loads(row["image_spacing"])]
        index[case_id] = {"file": f"{case_id}.npz", "shape": list(volume.image.shape[1:]),
                          "spacing": [float(s) for s in spacing]}
    return index


def augmented_samples(params: Params, cache: Path, case_ids: list[str]) -> list:
    """Apply the training transforms to a few cached cases (seeded, so the preview is stable)."""
    from monai.data import set_track_meta
    from monai.transforms import Compose

    from segflow.transforms import build_training_transforms

    set_track_meta(False)
    cached, random = build_training_transforms(params.augment, params.model.spatial_dims)
    transforms = Compose(cached + random)
    transforms.set_random_state(params.seed)
    samples = []
    for case_id in case_ids:
        volume = read_volume(cache / f"{case_id}.npz")
        out = transforms({"image": volume.image, "label": volume.label})
        out = out[0] if isinstance(out, list) else out  # 3D patch sampling returns a list
        samples.append((case_id, np.asarray(out["image"][0]), np.asarray(out["label"][0]).astype(np.uint8)))
    return samples


def main(params: Params, paths: Paths, tracker=None) -> dict:
    from segflow.planning.planner import Plan
    from segflow.plots import plot_samples

    manifest = pd.read_csv(paths.manifest)
    kept = read_json(paths.validation_report)["kept"]
    preprocessing = Plan.load(paths.plan).preprocessing
    index = preprocess_cases(paths.root / params.data.root, manifest, kept, paths.preprocessed,
                             params.data.label_map, preprocessing)
    write_json(paths.preprocessed / "index.json", {"preprocessing": preprocessing.model_dump(), "cases": index})
    samples = augmented_samples(params, paths.preprocessed, kept[: params.augment.preview_samples])
    plot_samples(samples, paths.augment_preview)
    if tracker:
        tracker.log_images("augment/preview", [paths.augment_preview])
    return {"cached_cases": len(index)}
