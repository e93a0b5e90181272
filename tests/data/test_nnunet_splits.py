"""nnunet_folds: the folds of nnU-Net's splits_final.json (fold k validates on its `val` list), every
dataset case validated in exactly one fold, and a ConfigError naming the file or case otherwise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from segflow.config import ConfigError
from segflow.data.splits import nnunet_folds

CASES = [f"case_{i}" for i in range(6)]


def splits_file(folder: Path, content: object) -> Path:
    path = folder / "splits_final.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def nnunet_splits(vals: list[list[str]]) -> list[dict]:
    """splits_final.json as nnU-Net writes it: per fold, the other cases train."""
    every = [c for val in vals for c in val]
    return [{"train": [c for c in every if c not in val], "val": val} for val in vals]


def test_each_case_gets_the_fold_whose_val_list_holds_it(tmp_path):
    path = splits_file(tmp_path, nnunet_splits([["case_0", "case_3"], ["case_1", "case_4"], ["case_2", "case_5"]]))
    assert nnunet_folds(path, CASES) == {"case_0": 0, "case_1": 1, "case_2": 2, "case_3": 0, "case_4": 1, "case_5": 2}


def test_the_train_lists_are_not_read(tmp_path):
    path = splits_file(tmp_path, [{"train": ["whatever"], "val": CASES[:3]}, {"val": CASES[3:]}])
    assert nnunet_folds(path, CASES) == {c: int(i >= 3) for i, c in enumerate(CASES)}


def test_a_case_in_two_val_lists_is_refused_naming_it_and_both_folds(tmp_path):
    path = splits_file(tmp_path, nnunet_splits([CASES[:4], CASES[3:]]))
    with pytest.raises(ConfigError, match="case case_3 is validated in folds 0 and 1"):
        nnunet_folds(path, CASES)


def test_a_dataset_case_in_no_val_list_is_refused_naming_it(tmp_path):
    path = splits_file(tmp_path, nnunet_splits([CASES[:2], CASES[2:5]]))
    with pytest.raises(ConfigError, match=r"1 case\(s\) of the dataset are in no fold's val list \(case_5\)") as raised:
        nnunet_folds(path, CASES)
    assert str(path) in str(raised.value)


def test_many_unplaced_cases_are_counted_and_the_first_named(tmp_path):
    many = [f"extra_{i}" for i in range(8)]
    path = splits_file(tmp_path, nnunet_splits([CASES]))
    with pytest.raises(ConfigError, match=r"8 case\(s\) .*\(extra_0, extra_1, extra_2, extra_3, extra_4 \.\.\.\)"):
        nnunet_folds(path, CASES + many)


def test_ids_the_dataset_does_not_have_are_ignored(tmp_path):
    path = splits_file(tmp_path, nnunet_splits([CASES[:3] + ["gone_1"], CASES[3:] + ["gone_2"]]))
    folds = nnunet_folds(path, CASES)
    assert sorted(folds) == CASES and "gone_1" not in folds


@pytest.mark.parametrize("content", [{"train": CASES, "val": CASES}, "not json", ["case_0"], [{"train": CASES}],
                                     [{"val": None}], 42])
def test_a_file_that_is_not_a_list_of_folds_is_refused_naming_it(tmp_path, content):
    path = splits_file(tmp_path, content)
    with pytest.raises(ConfigError, match="not an nnU-Net splits file") as raised:
        nnunet_folds(path, CASES)
    assert str(path) in str(raised.value)


def test_an_empty_list_of_folds_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="in no fold's val list"):
        nnunet_folds(splits_file(tmp_path, []), CASES)


def test_a_missing_file_is_refused_naming_it(tmp_path):
    with pytest.raises(ConfigError, match="splits_final.json: not an nnU-Net splits file"):
        nnunet_folds(tmp_path / "splits_final.json", CASES)


def test_numeric_ids_are_read_as_text(tmp_path):
    path = splits_file(tmp_path, [{"train": [2], "val": [1]}, {"train": [1], "val": [2]}])
    assert nnunet_folds(path, ["1", "2"]) == {"1": 0, "2": 1}


def test_a_val_that_is_text_rather_than_a_list_is_refused(tmp_path):
    path = splits_file(tmp_path, [{"train": [], "val": "abc"}])
    with pytest.raises(ConfigError, match="not an nnU-Net splits file"):
        nnunet_folds(path, ["a", "b", "c"])
