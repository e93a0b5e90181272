"""Which cases get an overlay, and the index that says so (artifacts/evaluate/overlays/index.json).

evaluate draws the worst cases by mean Dice over classes (where a reader learns what fails) and the
best few (what success looks like), and writes this index beside the PNGs; the results page reads
it back through `OverlayIndex.load`, so the choice has one owner.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from pydantic import BaseModel, ConfigDict

from segflow.files import load_json_model, write_json
from segflow.metrics.per_case import CASE_ID, FOLD, case_dice

BEST_CASES = 2  # best cases drawn besides the evaluate.overlay_cases worst ones


class OverlayCase(BaseModel):
    """One drawn case: its overlay file (in the overlays folder), fold, and Dice per class."""

    model_config = ConfigDict(frozen=True)
    case_id: str
    fold: int
    file: str
    mean_dice: float
    dice: dict[str, float]


class OverlayIndex(BaseModel):
    """The drawn cases, worst first, then the best, best first."""

    model_config = ConfigDict(frozen=True)
    worst: list[OverlayCase]
    best: list[OverlayCase]

    @classmethod
    def load(cls, path: Path | str) -> OverlayIndex:
        """Read index.json; a missing or invalid file is a `ConfigError` naming it."""
        return load_json_model(cls, path, "overlay index", "run the evaluate stage (dvc repro evaluate)")

    def save(self, path: Path | str) -> None:
        write_json(path, self.model_dump(mode="json"))


def pick_cases(per_case: pd.DataFrame, n_worst: int, n_best: int = BEST_CASES) -> tuple[list[str], list[str]]:
    """The `n_worst` cases with the lowest mean Dice over classes (worst first) and the `n_best`
    highest (best first) among the others; ties go to the case listed first."""
    ranked = case_dice(per_case).sort_values(kind="stable")
    worst = [str(c) for c in ranked.index[:n_worst]]
    rest = ranked.drop(index=worst)
    best = [str(c) for c in rest.sort_values(ascending=False, kind="stable").index[:n_best]]
    return worst, best


def fold_of(per_case: pd.DataFrame, case_id: str) -> int:
    """The fold whose model scored `case_id` (out of fold)."""
    return int(per_case.loc[per_case[CASE_ID].astype(str) == case_id, FOLD].iloc[0])
