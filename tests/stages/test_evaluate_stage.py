"""evaluate's decision and summary: the per-case table after the chosen postprocessing, and the
dataset-level metrics computed from it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from segflow.stages.evaluate import LCC, apply_decision, summarise

NAMES = ["anterior", "posterior"]


def scores() -> pd.DataFrame:
    """Raw and largest-component scores of four cases in two folds."""
    return pd.DataFrame({
        "case_id": ["a", "b", "c", "d"], "fold": [0, 0, 1, 1],
        "dice_anterior": [0.8, 0.6, 0.7, 0.9], f"dice_anterior{LCC}": [0.85, 0.65, 0.7, 0.95],
        "dice_posterior": [0.5, 0.7, 0.6, 0.8], f"dice_posterior{LCC}": [0.4, 0.7, 0.5, 0.8],
        "hd95_anterior": [2.0, 3.0, 2.5, 1.0], f"hd95_anterior{LCC}": [1.5, 2.0, 2.5, 1.0],
        "hd95_posterior": [4.0, 3.0, 2.0, 1.0], f"hd95_posterior{LCC}": [5.0, 3.0, 2.0, 1.0],
    })


def test_the_chosen_classes_take_their_largest_component_scores_and_keep_the_raw_dice():
    table = apply_decision(scores(), NAMES, {"keep_largest_component": [1]})
    assert table["dice_anterior"].tolist() == [0.85, 0.65, 0.7, 0.95]  # class 1: postprocessed
    assert table["hd95_anterior"].tolist() == [1.5, 2.0, 2.5, 1.0]
    assert table["dice_posterior"].tolist() == [0.5, 0.7, 0.6, 0.8]  # class 2: as predicted
    assert table["dice_anterior_raw"].tolist() == [0.8, 0.6, 0.7, 0.9]
    assert not [c for c in table.columns if c.endswith(LCC)]


def test_no_postprocessing_keeps_the_predictions_scores():
    table = apply_decision(scores(), NAMES, {"keep_largest_component": []})
    assert (table["dice_anterior"] == table["dice_anterior_raw"]).all()


def test_the_summary_has_class_means_their_mean_a_ci_and_each_folds_mean():
    table = apply_decision(scores(), NAMES, {"keep_largest_component": [1]})
    metrics = summarise(table, NAMES)
    assert metrics["n_cases"] == 4 and metrics["folds"] == [0, 1]
    assert metrics["dice_anterior"] == pytest.approx(0.7875) and metrics["dice_posterior"] == pytest.approx(0.65)
    assert metrics["dice_mean"] == pytest.approx((0.7875 + 0.65) / 2)
    assert metrics["dice_mean_before_postprocessing"] == pytest.approx(np.mean([0.75, 0.65]))
    assert metrics["dice_mean_fold_0"] == pytest.approx(np.mean([0.85, 0.65, 0.5, 0.7]))
    low, high = metrics["dice_mean_ci95"]
    assert low <= metrics["dice_mean"] <= high
    assert metrics["hd95_mean"] == pytest.approx(np.mean([np.mean([1.5, 2.0, 2.5, 1.0]), 2.5]))


def test_evaluation_shows_how_far_it_is_over_the_cases(capsys):
    from segflow.stages.evaluate import case_progress

    assert list(case_progress(iter("abc"), 3, "evaluate fold 0")) == ["a", "b", "c"]
    bar = capsys.readouterr().err
    assert "evaluate fold 0" in bar and "3/3" in bar and "case" in bar
