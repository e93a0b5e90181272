"""The per-case score table: evaluate's writer, and the readers compare, promotion and the model
card share (which columns are scores, per-case Dice, mean IoU and HD95, errors naming the file)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from segflow.metrics.per_case import (
    PerCaseError,
    case_dice,
    dice_columns,
    hd95_columns,
    mean_hd95,
    mean_iou,
    raw_dice_column,
    read_per_case,
    score_column,
    score_columns,
    write_per_case,
)


def table(dice_a=(0.5, 0.7), dice_b=(0.7, 0.9), cases=("case_000", "case_001")) -> pd.DataFrame:
    """A per-case table in evaluate's column order: per class Dice, HD95, raw Dice."""
    return pd.DataFrame({"case_id": list(cases), "fold": 0,
                         "dice_anterior": dice_a, "hd95_anterior": [1.0, 3.0], "dice_anterior_raw": 0.0,
                         "dice_posterior": dice_b, "hd95_posterior": np.nan, "dice_posterior_raw": 0.0})


def test_column_names_are_kind_and_class_with_raw_dice_beside():
    assert score_column("dice", "anterior") == "dice_anterior"
    assert score_column("hd95", "anterior") == "hd95_anterior"
    assert raw_dice_column("anterior") == "dice_anterior_raw"


def test_raw_columns_are_not_classes_but_a_class_named_raw_is():
    assert dice_columns(table()) == ["dice_anterior", "dice_posterior"]
    assert hd95_columns(table()) == ["hd95_anterior", "hd95_posterior"]
    assert score_columns(table()) == ["dice_anterior", "hd95_anterior", "dice_posterior", "hd95_posterior"]
    lonely = pd.DataFrame({"case_id": ["a"], "dice_tumour_raw": [0.5]})  # no dice_tumour beside it
    assert dice_columns(lonely) == ["dice_tumour_raw"]


def test_case_dice_averages_classes_by_case_id():
    assert case_dice(table()).round(6).tolist() == [0.6, 0.8]
    assert case_dice(table()).index.tolist() == ["case_000", "case_001"]


def test_mean_iou_and_mean_hd95_ignore_raw_columns_and_nan():
    assert mean_iou(table(dice_a=(0.5, 0.5), dice_b=(0.5, 0.5))) == pytest.approx(1 / 3)
    assert mean_hd95(table()) == pytest.approx(2.0)
    assert np.isnan(mean_hd95(table().drop(columns=["hd95_anterior", "hd95_posterior"])))


def test_written_table_is_read_back_rounded_with_case_ids_as_text(tmp_path):
    scores = table(dice_a=(0.123456789, 0.7), cases=("001", "002"))
    write_per_case(tmp_path / "per_case.csv", scores)
    assert (tmp_path / "per_case.csv").read_text() == scores.round(5).to_csv(index=False)
    read = read_per_case(tmp_path / "per_case.csv")
    assert read.case_id.tolist() == ["1", "2"] and read.dice_anterior[0] == 0.12346
    assert list(read.columns) == list(scores.columns)


@pytest.mark.parametrize(("content", "complaint"), [
    ("case_id,hd95_x\na,1.0\n", r"needs a case_id column and dice_<class> columns \(has case_id, hd95_x\)"),
    ("id,dice_x\na,0.5\n", "needs a case_id column"),
    ("case_id,dice_x\na,0.5\nb,0.6\na,0.7\n", "case_id a appears more than once"),
    ("case_id,dice_x\n", "has no cases"),
    ("", "not a readable per-case CSV"),
    ('case_id,dice_x\n"a,0.5\n', "not a readable per-case CSV"),
])
def test_a_malformed_table_is_refused_naming_the_file(tmp_path, content, complaint):
    path = tmp_path / "run" / "per_case.csv"
    path.parent.mkdir()
    path.write_text(content)
    with pytest.raises(PerCaseError, match=complaint) as caught:
        read_per_case(path)
    assert str(caught.value).startswith(f"{path}: ")


def test_a_missing_table_says_which_stage_writes_it(tmp_path):
    with pytest.raises(PerCaseError, match=r"per_case.csv: no per-case scores; run the evaluate stage"):
        read_per_case(tmp_path / "per_case.csv")
