"""The preprocessed cache (artifacts/preprocessed/): one .npz per kept case, resampled and
normalised as the plan says, and index.json naming every case with its shape and spacing.

The preprocess stage writes it; train and evaluate read it, and ask it which cached cases a fold
trains and validates on. This module is the one place that knows its layout.
"""

from __future__ import annotations

import json
from pathlib import Path

from segflow.config import ConfigError
from segflow.data.preprocess import Preprocessing, Volume, read_volume, save_volume
from segflow.data.splits import Splits
from segflow.files import read_json, write_json

INDEX = "index.json"


class PreprocessedCache:
    """The cache folder: `write_case` then `write_index` (preprocess); `case_ids`, `spacing`,
    `fold_cases` and `load` (train, evaluate)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def case_file(self, case_id: str) -> Path:
        return self.folder / f"{case_id}.npz"

    def write_case(self, case_id: str, volume: Volume, spacing: list[float]) -> dict:
        """Store one prepared case; its index entry (`spacing`: the case's own, when not resampled)."""
        save_volume(self.case_file(case_id), volume)
        return {"file": self.case_file(case_id).name, "shape": list(volume.image.shape[1:]),
                "spacing": [float(s) for s in (volume.spacing or spacing)]}

    def write_index(self, preprocessing: Preprocessing, entries: dict[str, dict]) -> None:
        """The index, written last: a cache without one is incomplete."""
        write_json(self.folder / INDEX, {"preprocessing": preprocessing.model_dump(), "cases": entries})

    def entries(self) -> dict[str, dict]:
        """Case id -> {file, shape, spacing}; a missing or unreadable index is a `ConfigError`."""
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

    def load(self, case_ids: list[str]) -> list[dict]:
        """Cached cases as MONAI data dicts (decoded once, kept in memory for every epoch)."""
        items = []
        for case_id in case_ids:
            volume = read_volume(self.case_file(case_id))
            items.append({"case_id": case_id, "image": volume.image, "label": volume.label})
        return items
