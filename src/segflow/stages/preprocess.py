"""preprocess: resample and normalise the kept cases as the plan says into the training cache
(artifacts/preprocessed), and preview the augmentation train will apply to them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from segflow.config import Params
from segflow.data.cache import PreprocessedCache
from segflow.data.manifest import case_image_paths
from segflow.data.preprocess import load_case
from segflow.paths import Paths
from segflow.validation.report import ValidationReport


def preprocess_cases(data_root: Path, manifest: pd.DataFrame, kept: list[str], cache: PreprocessedCache,
                     label_map: dict[int, int] | None = None, preprocessing=None) -> dict:
    """Resample and normalise each kept case once and store it; returns the cache's index entries."""
    rows = manifest.drop_duplicates("case_id").set_index("case_id")
    index = {}
    for case_id in kept:
        row = rows.loc[case_id]
        volume = load_case(case_image_paths(data_root, row), data_root / row["label"], label_map, preprocessing)
        index[case_id] = cache.write_case(case_id, volume, json.loads(row["image_spacing"]))
    return index


def augmented_samples(params: Params, cache: PreprocessedCache, case_ids: list[str]) -> list:
    """Apply the training transforms to a few cached cases (seeded, so the preview is stable)."""
    from monai.data import set_track_meta
    from monai.transforms import Compose

    from segflow.transforms import build_training_transforms

    set_track_meta(False)
    cached, random = build_training_transforms(params.augment, params.preprocess.patch_size, params.model.spatial_dims)
    transforms = Compose(cached + random)
    transforms.set_random_state(params.seed)
    samples = []
    for item in cache.load(case_ids):
        case_id = item["case_id"]
        out = transforms({"image": item["image"], "label": item["label"]})
        out = out[0] if isinstance(out, list) else out  # 3D patch sampling returns a list
        samples.append((case_id, np.asarray(out["image"][0]), np.asarray(out["label"][0]).astype(np.uint8)))
    return samples


def main(params: Params, paths: Paths, tracker=None) -> dict:
    from segflow.planning.plan import Plan
    from segflow.reporting.figures import plot_samples

    manifest = pd.read_csv(paths.manifest)
    kept = ValidationReport.load(paths.validation_report).kept
    preprocessing = Plan.load(paths.plan).preprocessing
    cache = PreprocessedCache(paths.preprocessed)
    index = preprocess_cases(paths.root / params.data.root, manifest, kept, cache, params.data.label_map,
                             preprocessing)
    cache.write_index(preprocessing, index)
    samples = augmented_samples(params, cache, kept[: params.augment.preview_samples])
    plot_samples(samples, paths.preprocess_preview)
    if tracker:
        tracker.log_images("preprocess/preview", [paths.preprocess_preview])
    return {"cached_cases": len(index)}
