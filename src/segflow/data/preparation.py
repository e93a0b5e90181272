"""Preparing the kept cases into the preprocessed cache, in parallel worker processes.

Each case is read, normalised and resampled as the plan says (`segflow.data.preprocess.load_case`)
and stored (`segflow.data.cache`) by a spawned worker, with a progress bar on stderr. A case that
cannot be prepared is named with the rule `case_preprocessable` and left out; only when none can
be is it a `StageFailed`.
"""

from __future__ import annotations

import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import pandas as pd

from segflow.data.cache import PreprocessedCache
from segflow.data.manifest import case_image_paths
from segflow.data.preprocess import load_case
from segflow.errors import StageFailed

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
