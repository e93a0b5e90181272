"""Build the case manifest: one row per delivered case with what validation needs to judge it.

Nothing here raises on a bad case: unreadable or missing files are recorded in the row
(`*_error`, `*_exists`) so the validate stage can name every problem at once.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from segflow.data.msd import CaseFiles, MsdDataset

PERCENTILES = {"intensity_p0_5": 0.5, "intensity_p50": 50.0, "intensity_p99_5": 99.5}


def _file_digest(path: Path, digest) -> None:
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)


def content_hash(paths: list[Path]) -> str:
    """sha256 over the bytes of the given existing files, in order (detects duplicate cases)."""
    digest = hashlib.sha256()
    for path in paths:
        if path.is_file():
            _file_digest(path, digest)
    return digest.hexdigest()


def _read_nifti(path: Path) -> tuple[np.ndarray, object]:
    import nibabel as nib

    image = nib.load(str(path))
    return np.asanyarray(image.dataobj), image.header


def _geometry(prefix: str, array: np.ndarray, header) -> dict:
    return {
        f"{prefix}_shape": json.dumps([int(s) for s in array.shape]),
        f"{prefix}_spacing": json.dumps([round(float(z), 6) for z in header.get_zooms()]),
        f"{prefix}_dtype": str(header.get_data_dtype()),
    }


def _intensity_stats(array: np.ndarray) -> dict:
    values = array.astype(np.float64, copy=False)
    finite = np.isfinite(values)
    stats = {"intensity_finite": bool(finite.all())}
    kept = values[finite] if not stats["intensity_finite"] else values
    if kept.size == 0:
        return stats
    values_at = np.percentile(kept, list(PERCENTILES.values()))
    stats.update({name: float(v) for name, v in zip(PERCENTILES, values_at, strict=True)})
    stats["intensity_mean"] = float(kept.mean())
    stats["intensity_std"] = float(kept.std())
    return stats


def _label_stats(array: np.ndarray) -> dict:
    values, counts = np.unique(array, return_counts=True)
    integral = bool(np.all(np.isfinite(values)) and np.all(values == np.round(values)))
    return {
        "label_values": json.dumps([float(v) if not integral else int(v) for v in values]),
        "label_voxels": json.dumps({str(int(v)): int(c) for v, c in zip(values, counts, strict=True)})
        if integral
        else "{}",
        "label_integral": integral,
    }


def _describe_file(root: Path, rel: str | None, prefix: str) -> dict:
    row: dict = {prefix: rel or "", f"{prefix}_exists": False, f"{prefix}_error": ""}
    if not rel:
        return row
    path = root / rel
    row[f"{prefix}_exists"] = path.is_file()
    if not row[f"{prefix}_exists"]:
        return row
    try:
        array, header = _read_nifti(path)
        row.update(_geometry(prefix, array, header))
        row.update(_intensity_stats(array) if prefix == "image" else _label_stats(array))
    except Exception as exc:  # noqa: BLE001 - any reader failure is a finding, not a crash
        row[f"{prefix}_error"] = f"{type(exc).__name__}: {exc}"
    return row


def describe_case(root: Path, case: CaseFiles) -> dict:
    """All manifest columns for one case."""
    row = {"case_id": case.case_id, "listed": case.listed}
    row.update(_describe_file(root, case.image, "image"))
    row.update(_describe_file(root, case.label, "label"))
    files = [root / p for p in (case.image, case.label) if p]
    row["content_hash"] = content_hash(files)
    return row


def build_manifest(dataset: MsdDataset) -> pd.DataFrame:
    """One row per case (listed first, then orphans), columns in a stable order."""
    rows = [describe_case(dataset.root, case) for case in dataset.cases]
    frame = pd.DataFrame(rows)
    first = ["case_id", "listed", "image", "label", "image_exists", "label_exists"]
    return frame[first + [c for c in frame.columns if c not in first]]
