"""preprocess: resample and normalise the kept cases as the plan says into the training cache
(artifacts/preprocessed) through `segflow.data.preparation` (parallel workers; a case that cannot
be prepared is named and left out), and preview the augmentation train will apply to them."""

from __future__ import annotations

import numpy as np
import pandas as pd

from segflow.config import Params
from segflow.data.cache import PreprocessedCache
from segflow.data.preparation import preprocess_cases
from segflow.paths import Paths
from segflow.validation.report import ValidationReport


def augmented_samples(params: Params, cache: PreprocessedCache, case_ids: list[str],
                      ignore_label: int | None = None) -> list:
    """Apply the training transforms to a few cached cases (seeded, so the preview is stable)."""
    from monai.data import set_track_meta
    from monai.transforms import Compose

    from segflow.transforms import build_training_transforms

    set_track_meta(False)
    cached, random = build_training_transforms(params.augment, params.preprocess.patch_size, params.model.spatial_dims,
                                               ignore_label)
    transforms = Compose(cached + random)
    transforms.set_random_state(params.seed)
    samples = []
    for item in cache.iter_cases(case_ids):
        case_id = item["case_id"]
        out = transforms({"image": item["image"], "label": item["label"]})
        out = out[0] if isinstance(out, list) else out  # 3D patch sampling returns a list
        samples.append((case_id, np.asarray(out["image"][0]), np.asarray(out["label"][0]).astype(np.uint8)))
    return samples


def main(params: Params, paths: Paths, tracker=None) -> dict:
    from segflow.data.splits import Splits
    from segflow.planning.plan import Plan
    from segflow.reporting.figures import plot_samples

    manifest = pd.read_csv(paths.manifest)
    kept = ValidationReport.load(paths.validation_report).kept
    preprocessing = Plan.load(paths.plan).preprocessing
    cache = PreprocessedCache(paths.preprocessed)
    ignore_label = Splits.load(paths.splits).ignore_label
    index, failed = preprocess_cases(paths.root / params.data.root, manifest, kept, cache, params.data.label_map,
                                     preprocessing, params.preprocess.num_workers, ignore_label)
    cache.write_index(preprocessing, index, failed)
    samples = augmented_samples(params, cache, list(index)[: params.augment.preview_samples], ignore_label)
    plot_samples(samples, paths.preprocess_preview)
    if tracker:
        tracker.log_images("preprocess/preview", [paths.preprocess_preview])
    return {"cached_cases": len(index), "failed_cases": len(failed)}
