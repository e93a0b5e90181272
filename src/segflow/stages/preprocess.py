"""preprocess: resample and normalise the kept cases as the plan says into the training cache
(artifacts/preprocessed), in parallel worker processes, and preview the augmentation train will
apply to them. A case that cannot be prepared is reported by id and left out; the stage fails
only when none can be."""

from __future__ import annotations

import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd

from segflow.config import Params
from segflow.data.cache import PreprocessedCache
from segflow.data.manifest import case_image_paths
from segflow.data.preprocess import load_case
from segflow.errors import StageFailed
from segflow.paths import Paths
from segflow.validation.report import ValidationReport

RULE = "case_preprocessable"  # the rule a case breaks when it cannot be prepared


@dataclass(frozen=True)
class CaseJob:
    """Everything one worker needs to prepare and store one case (picklable)."""

    case_id: str
    images: list[Path]
    label: Path
    spacing: list[float]
    label_map: dict[int, int] | None
    preprocessing: dict
    cache: Path
    ignore_label: int | None


def prepare_case(job: CaseJob) -> dict:
    """Read, prepare and store one case; its index entry."""
    volume = load_case(job.images, job.label, job.label_map, job.preprocessing)
    return PreprocessedCache(job.cache).write_case(job.case_id, volume, job.spacing, job.ignore_label)


def case_jobs(data_root: Path, manifest: pd.DataFrame, kept: list[str], cache: PreprocessedCache,
              label_map=None, preprocessing=None, ignore_label: int | None = None) -> list[CaseJob]:
    rows = manifest.drop_duplicates("case_id").set_index("case_id")
    plan = preprocessing.model_dump() if hasattr(preprocessing, "model_dump") else preprocessing
    # str(): the report keeps ids as the manifest parsed them (a 2D set's "0" reads as 0).
    return [CaseJob(str(case_id), case_image_paths(data_root, rows.loc[case_id]), data_root / rows.loc[case_id, "label"],
                    json.loads(rows.loc[case_id, "image_spacing"]), label_map, plan, cache.folder, ignore_label)
            for case_id in kept]


# With num_workers auto, a worker process is started per this many cases at most: starting one
# costs seconds of imports, more than a few small cases take to prepare.
CASES_PER_AUTO_WORKER = 16


def worker_count(requested: int, n_cases: int) -> int:
    """preprocess.num_workers as given (at most one per case); 0: one per CPU core, and at most
    one per CASES_PER_AUTO_WORKER cases."""
    if requested:
        return max(1, min(requested, n_cases))
    return max(1, min(os.cpu_count() or 1, n_cases // CASES_PER_AUTO_WORKER))


def _outcomes(jobs: list[CaseJob], workers: int):
    """(job, (entry, error)) as each finishes; one worker runs in this process."""
    if workers == 1:
        yield from ((job, _attempt(job)) for job in jobs)
        return
    # spawn: the workers start clean, without the OpenMP thread pools torch may hold here.
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(_attempt, job): job for job in jobs}
        yield from ((futures[done], done.result()) for done in as_completed(futures))


def run_jobs(jobs: list[CaseJob], workers: int) -> tuple[dict[str, dict], dict[str, str]]:
    """(entries, failures), both in the jobs' order, with a progress bar on stderr."""
    from tqdm import tqdm

    results, failed = {}, {}
    with tqdm(total=len(jobs), desc="preprocess", unit="case", file=sys.stderr, mininterval=2,
              disable=len(jobs) < 2) as progress:
        for job, (entry, error) in _outcomes(jobs, workers):
            if error is None:
                results[job.case_id] = entry
            else:
                failed[job.case_id] = error
            progress.update(1)
    order = [job.case_id for job in jobs]
    return {c: results[c] for c in order if c in results}, {c: failed[c] for c in order if c in failed}


def _attempt(job: CaseJob) -> tuple[dict | None, str | None]:
    try:
        return prepare_case(job), None
    except Exception as exc:  # noqa: BLE001 - any failure is this case's finding, named by id and rule
        return None, f"{type(exc).__name__}: {exc}"


def preprocess_cases(data_root: Path, manifest: pd.DataFrame, kept: list[str], cache: PreprocessedCache,
                     label_map: dict[int, int] | None = None, preprocessing=None, workers: int = 1,
                     ignore_label: int | None = None) -> tuple[dict, dict]:
    """Resample and normalise each kept case once and store it: (index entries, failures)."""
    jobs = case_jobs(data_root, manifest, kept, cache, label_map, preprocessing, ignore_label)
    entries, failed = run_jobs(jobs, worker_count(workers, len(jobs)))
    for case_id, why in failed.items():
        print(f"preprocess: case {case_id} left out [{RULE}]: {why}", file=sys.stderr)
    if not entries:
        raise StageFailed(f"preprocess: no case could be prepared ({len(failed)} failed [{RULE}])")
    return entries, failed


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
