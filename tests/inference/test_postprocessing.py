"""Keep-largest-component postprocessing: islands go, classes stay independent, and it is
chosen per class only on a real, significant gain that removes little of the predicted foreground."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from segflow.inference.postprocessing import (
    Rule,
    apply_postprocessing,
    choose_postprocessing,
    describe_decision,
    keep_largest_component,
)


def two_class_map() -> np.ndarray:
    """Class 1: a cube plus a one-voxel island; class 2: a bar plus a two-voxel island."""
    labels = np.zeros((12, 12, 12), dtype=np.uint8)
    labels[1:5, 1:5, 1:5] = 1
    labels[10, 10, 10] = 1
    labels[7:11, 1:3, 1:3] = 2
    labels[1, 9:11, 9] = 2
    return labels


def test_spurious_island_is_removed_and_the_main_component_kept():
    labels = two_class_map()
    out = keep_largest_component(labels, [1])
    assert out[10, 10, 10] == 0
    assert (out == 1).sum() == 4**3
    assert out.dtype == np.uint8 and out.shape == labels.shape


def test_classes_are_handled_independently():
    labels = two_class_map()
    only_first = keep_largest_component(labels, [1])
    assert np.array_equal(only_first == 2, labels == 2)  # class 2 untouched, island included
    both = keep_largest_component(labels, [1, 2])
    assert (both == 2).sum() == 4 * 2 * 2 and both[1, 9, 9] == 0


def test_diagonal_neighbours_belong_to_the_same_component():
    labels = np.zeros((6, 6), dtype=np.uint8)
    labels[0:3, 0:3] = 1
    labels[3, 3] = 1  # touches the square at a corner only
    assert keep_largest_component(labels, [1])[3, 3] == 1


RULE = Rule(min_gain=0.005, max_p_value=0.05, max_removed=0.10)


def table(raw: list[float], lcc: list[float], voxels: list[int] | None = None,
          voxels_lcc: list[int] | None = None, name: str = "a") -> pd.DataFrame:
    columns = {f"dice_{name}": raw, f"dice_{name}_lcc": lcc}
    if voxels is not None:
        columns |= {f"voxels_{name}": voxels, f"voxels_{name}_lcc": voxels_lcc}
    return pd.DataFrame(columns)


def test_a_consistent_real_gain_that_removes_little_is_kept():
    per_case = table([0.80 + 0.01 * i for i in range(12)], [0.83 + 0.01 * i for i in range(12)],
                     [1000] * 12, [980] * 12)
    decision = choose_postprocessing(per_case, ["a"], RULE)
    evidence = decision["classes"]["a"]
    assert decision["keep_largest_component"] == [1] and evidence["chosen"]
    assert evidence["gain"] == pytest.approx(0.03) and evidence["p_value"] < 0.05
    assert evidence["removed_share"] == pytest.approx(0.02) and evidence["reason"].startswith("kept")
    assert decision["dice_after"]["a"] > decision["dice_before"]["a"]
    json.dumps(decision)  # goes to postprocessing.json and the model file as is


def test_a_negligible_gain_that_deletes_a_quarter_of_the_foreground_is_refused():
    """The ISBI membranes case: +0.0022 Dice for deleting 25% of the predicted membrane pixels."""
    per_case = table([0.80 + 0.01 * i for i in range(12)], [0.8022 + 0.01 * i for i in range(12)],
                     [59514] * 12, [44526] * 12)
    evidence = choose_postprocessing(per_case, ["a"], RULE)["classes"]["a"]
    assert not evidence["chosen"] and evidence["removed_share"] == pytest.approx(0.2518, abs=1e-4)
    assert "postprocess_min_gain" in evidence["reason"]
    big_gain = choose_postprocessing(table(per_case["dice_a"].tolist(), (per_case["dice_a"] + 0.05).tolist(),
                                           [59514] * 12, [44526] * 12), ["a"], RULE)["classes"]["a"]
    assert not big_gain["chosen"] and "postprocess_max_removed" in big_gain["reason"]
    assert "25.2%" in big_gain["reason"]


def test_a_gain_carried_by_one_case_is_not_significant():
    raw = [0.8] * 12
    lcc = [0.8] * 11 + [0.95]  # +0.0125 on average, from one case
    evidence = choose_postprocessing(table(raw, lcc), ["a"], RULE)["classes"]["a"]
    assert evidence["gain"] > RULE.min_gain and evidence["p_value"] > RULE.max_p_value
    assert not evidence["chosen"] and "postprocess_max_p_value" in evidence["reason"]


def test_classes_are_decided_apart_and_undefined_dice_is_skipped():
    per_case = pd.concat([table([0.7 + 0.01 * i for i in range(10)] + [np.nan], [0.75 + 0.01 * i for i in range(10)]
                                + [np.nan], name="anterior"),
                          table([0.9] * 11, [0.85] * 11, name="posterior")], axis=1)
    decision = choose_postprocessing(per_case, ["anterior", "posterior"], RULE)
    assert decision["keep_largest_component"] == [1]
    assert decision["classes"]["anterior"]["n_cases"] == 10
    assert decision["dice_after"]["posterior"] == decision["dice_before"]["posterior"]
    assert [line.split(":")[0] for line in describe_decision(decision)] == ["anterior", "posterior"]


def test_equal_dice_does_not_choose_postprocessing():
    per_case = table([0.8, 0.9], [0.8, 0.9])
    decision = choose_postprocessing(per_case, ["a"], RULE)
    assert decision["keep_largest_component"] == [] and decision["classes"]["a"]["p_value"] == 1.0


def test_apply_follows_the_decision_and_none_is_the_identity():
    labels = two_class_map()
    assert apply_postprocessing(labels, None) is labels
    assert np.array_equal(apply_postprocessing(labels, {"keep_largest_component": []}), labels)
    applied = apply_postprocessing(labels, {"keep_largest_component": [2]})
    assert np.array_equal(applied, keep_largest_component(labels, [2]))
