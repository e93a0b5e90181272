"""kfold_split / fold_cases: reproducible, balanced, every case in exactly one fold."""

from __future__ import annotations

from collections import Counter

import pytest

from segflow.data.splits import fold_cases, kfold_split

CASES = [f"hippocampus_{i:03d}" for i in range(23)]


def test_same_inputs_give_same_folds_whatever_the_input_order():
    assert kfold_split(CASES, 5, seed=0) == kfold_split(list(reversed(CASES)), 5, seed=0)


def test_every_case_gets_exactly_one_fold_in_range():
    folds = kfold_split(CASES, 5, seed=0)
    assert sorted(folds) == sorted(CASES)
    assert set(folds.values()) == set(range(5))


@pytest.mark.parametrize(("n_cases", "n_folds"), [(23, 5), (10, 5), (7, 3), (2, 2)])
def test_fold_sizes_differ_by_at_most_one(n_cases, n_folds):
    sizes = Counter(kfold_split(CASES[:n_cases], n_folds, seed=3).values())
    assert len(sizes) == n_folds
    assert max(sizes.values()) - min(sizes.values()) <= 1


def test_different_seed_gives_different_assignment():
    assert kfold_split(CASES, 5, seed=0) != kfold_split(CASES, 5, seed=1)


def test_duplicate_case_ids_are_refused():
    with pytest.raises(ValueError, match="unique"):
        kfold_split([*CASES, CASES[0]], 5, seed=0)


def test_fold_cases_partition_the_cases():
    folds = kfold_split(CASES, 5, seed=0)
    seen = []
    for fold in range(5):
        training, validation = fold_cases(folds, fold, CASES)
        assert not set(training) & set(validation)
        assert sorted(training + validation) == sorted(CASES)
        assert validation == sorted(c for c in CASES if folds[c] == fold)
        seen += validation
    assert sorted(seen) == sorted(CASES)  # each case validates exactly once


def test_fold_cases_skips_cases_the_split_does_not_know():
    folds = kfold_split(CASES[:10], 2, seed=0)
    training, validation = fold_cases(folds, 0, [*CASES[:10], "quarantined_case"])
    assert "quarantined_case" not in training + validation
    assert sorted(training + validation) == sorted(CASES[:10])
    assert training == sorted(training) and validation == sorted(validation)


def test_fold_all_trains_on_every_case_and_validates_on_none():
    folds = kfold_split(CASES, 5, seed=0)
    training, validation = fold_cases(folds, "all", [*CASES, "quarantined_case"])
    assert training == sorted(CASES) and validation == []
