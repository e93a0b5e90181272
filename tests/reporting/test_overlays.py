"""evaluate draws the worst cases by mean Dice (not the first ones) and the best few."""

from __future__ import annotations

import pandas as pd

from segflow.reporting.overlays import OverlayCase, OverlayIndex, fold_of, pick_cases


def per_case() -> pd.DataFrame:
    return pd.DataFrame({"case_id": ["a", "b", "c", "d", "e"], "fold": [0, 0, 1, 1, 1],
                         "dice_x": [0.9, 0.2, 0.8, 0.5, 0.95], "dice_y": [0.9, 0.4, 0.2, 0.5, 0.95],
                         "dice_x_raw": [0.0] * 5})


def test_the_worst_cases_by_mean_dice_come_first_then_the_best():
    worst, best = pick_cases(per_case(), 2, 2)
    assert worst == ["b", "c"]  # mean 0.3 and 0.5 (d is 0.5 too, listed later); raw Dice ignored
    assert best == ["e", "a"]


def test_a_case_is_never_both_worst_and_best():
    worst, best = pick_cases(per_case(), 4, 2)
    assert worst == ["b", "c", "d", "a"] and best == ["e"]


def test_the_index_reads_back_what_evaluate_wrote(tmp_path):
    case = OverlayCase(case_id="b", fold=fold_of(per_case(), "b"), file="b.png", mean_dice=0.3,
                       dice={"x": 0.2, "y": 0.4})
    OverlayIndex(worst=[case], best=[]).save(tmp_path / "index.json")
    assert OverlayIndex.load(tmp_path / "index.json").worst == [case]
