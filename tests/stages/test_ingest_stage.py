"""ingest's split: case-level folds, orphans left out, identical content kept in one fold."""

from __future__ import annotations

import pandas as pd

from segflow.stages.ingest import build_splits


def manifest(rows: list[tuple[str, bool, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["case_id", "listed", "content_hash"])


def test_every_listed_case_gets_one_fold_and_orphans_none():
    table = manifest([(f"c{i}", True, f"h{i}") for i in range(10)] + [("orphan", False, "x")])
    folds = build_splits(table, n_folds=5, seed=0)
    assert sorted(folds) == [f"c{i}" for i in range(10)]
    assert sorted(pd.Series(folds).value_counts().tolist()) == [2] * 5


def test_the_split_is_the_same_for_the_same_seed_and_changes_with_it():
    table = manifest([(f"c{i}", True, f"h{i}") for i in range(20)])
    assert build_splits(table, 5, seed=0) == build_splits(table.iloc[::-1], 5, seed=0)
    assert build_splits(table, 5, seed=0) != build_splits(table, 5, seed=1)


def test_cases_with_identical_content_share_a_fold():
    rows = [(f"c{i}", True, f"h{i}") for i in range(10)] + [("copy_of_c3", True, "h3"), ("copy_of_c7", True, "h7")]
    folds = build_splits(manifest(rows), n_folds=5, seed=3)
    assert folds["copy_of_c3"] == folds["c3"] and folds["copy_of_c7"] == folds["c7"]


def test_a_duplicated_case_id_is_split_once():
    rows = [(f"c{i}", True, f"h{i}") for i in range(6)] + [("c2", True, "h2")]
    assert sorted(build_splits(manifest(rows), 3, 0)) == [f"c{i}" for i in range(6)]
