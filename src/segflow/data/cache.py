"""The preprocessed cache (artifacts/preprocessed/): each kept case resampled and normalised as
the plan says, and index.json naming every case with its shape, spacing and files.

Per case three uncompressed `.npy` files: `<case>.image.npy` (C, *spatial) float32,
`<case>.label.npy` (1, *spatial) uint8 and `<case>.foreground.npy`, up to FOREGROUND_SAMPLES voxel
coordinates per foreground class (nnU-Net's class locations), so a foreground-centred patch can
be drawn without reading the label. `.npy` rather than a compressed or chunked format: a memory
map reads just the pages a patch touches, the OS page cache shares them between DDP processes
and loader workers, and no decoder costs CPU time on 2 cores (README, Bring your own data).

The preprocess stage writes it; train and evaluate read it, and ask it which cached cases a fold
trains and validates on. This module is the one place that knows its layout.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from segflow.config import ConfigError
from segflow.data.preprocess import Preprocessing, Volume
from segflow.data.splits import Splits
from segflow.files import atomic_path, read_json, write_json

INDEX = "index.json"
ROLES = ("image", "label", "foreground")
FOREGROUND_SAMPLES = 10_000  # per class, as nnU-Net keeps


def foreground_locations(label: np.ndarray, case_id: str, ignore_label: int | None = None) -> np.ndarray:
    """(M, spatial) voxel coordinates: up to FOREGROUND_SAMPLES of each foreground class (seeded by
    the case id, so the cache is reproducible); the ignore label and background are left out."""
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(case_id.encode()).digest()[:8], "little"))
    values = [int(v) for v in np.unique(label) if v != 0 and v != ignore_label]
    picked = []
    for value in values:
        where = np.flatnonzero(label[0] == value)
        if where.size > FOREGROUND_SAMPLES:
            where = np.sort(rng.choice(where, FOREGROUND_SAMPLES, replace=False))
        picked.append(where)
    flat = np.concatenate(picked) if picked else np.zeros(0, np.int64)
    return np.stack(np.unravel_index(flat, label.shape[1:]), axis=1).astype(np.int32)


def _save_array(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, np.ascontiguousarray(array))


class PreprocessedCache:
    """The cache folder: `write_case` then `write_index` (preprocess); `case_ids`, `spacing`,
    `fold_cases`, `load`, `iter_cases` and `file_item` (train, evaluate)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def case_file(self, case_id: str, role: str = "image") -> Path:
        return self.folder / f"{case_id}.{role}.npy"

    def case_files(self, case_id: str) -> list[Path]:
        return [self.case_file(case_id, role) for role in ROLES]

    def write_case(self, case_id: str, volume: Volume, spacing: list[float], ignore_label: int | None = None) -> dict:
        """Store one prepared case; its index entry (`spacing`: the case's own, when not resampled)."""
        _save_array(self.case_file(case_id, "image"), volume.image.astype(np.float32, copy=False))
        _save_array(self.case_file(case_id, "label"), volume.label.astype(np.uint8, copy=False))
        _save_array(self.case_file(case_id, "foreground"), foreground_locations(volume.label, case_id, ignore_label))
        return {"shape": list(volume.image.shape[1:]), "channels": int(volume.image.shape[0]),
                "spacing": [float(s) for s in (volume.spacing or spacing)],
                "original_shape": list(volume.original_shape) if volume.original_shape else None}

    def write_index(self, preprocessing: Preprocessing, entries: dict[str, dict], failed: dict[str, str] | None = None
                    ) -> None:
        """The index, written last: a cache without one is incomplete. `failed`: case -> why it
        could not be preprocessed (those cases are left out)."""
        write_json(self.folder / INDEX, {"preprocessing": preprocessing.model_dump(), "cases": entries,
                                         "failed": failed or {}})

    def entries(self) -> dict[str, dict]:
        """Case id -> {shape, channels, spacing, original_shape}; a missing or unreadable index is a
        `ConfigError`."""
        path = self.folder / INDEX
        try:
            return read_json(path)["cases"]
        except FileNotFoundError:
            raise ConfigError(f"{path}: no preprocessed cache; run the preprocess stage first") from None
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
            raise ConfigError(f"{path}: not a valid cache index; rerun the preprocess stage") from None

    def case_ids(self) -> list[str]:
        return sorted(self.entries())

    def spacing(self, case_id: str) -> list[float]:
        return self.entries()[case_id]["spacing"]

    def fold_cases(self, splits: Splits, fold: int) -> tuple[list[str], list[str]]:
        """(training, validation) ids among the cached cases for validation fold `fold`."""
        return splits.cases_of_fold(fold, self.case_ids())

    def case_bytes(self, case_ids: list[str], extra_per_voxel: int = 0) -> int:
        """Bytes these cases take in memory: float32 image channels, uint8 label, and
        `extra_per_voxel` (what a holder keeps besides) per voxel."""
        entries = self.entries()
        return sum(int(np.prod(entries[c]["shape"])) * (4 * entries[c].get("channels", 1) + 1 + extra_per_voxel)
                   for c in case_ids)

    def file_item(self, case_id: str) -> dict:
        """One case as paths to its arrays (what segflow.transforms.patches reads a patch from)."""
        return {"case_id": case_id, **{role: str(self.case_file(case_id, role)) for role in ROLES}}

    def load(self, case_ids: list[str]) -> list[dict]:
        """Cached cases as MONAI data dicts held in memory (image and label)."""
        return [{"case_id": c, "image": np.load(self.case_file(c, "image")), "label": np.load(self.case_file(c, "label"))}
                for c in case_ids]

    def iter_cases(self, case_ids: list[str]) -> Iterator[dict]:
        """The cases one at a time, each read when reached, so memory holds one case at a time."""
        for case_id in case_ids:
            yield self.load([case_id])[0]
