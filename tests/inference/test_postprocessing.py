"""Keep-largest-component postprocessing: islands go, classes stay independent, and it is
chosen only for the classes whose validation Dice it raises."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from segflow.inference.postprocessing import apply_postprocessing, choose_postprocessing, keep_largest_component


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


def test_choose_picks_only_the_class_whose_mean_dice_improves():
    per_case = pd.DataFrame({
        "dice_anterior": [0.80, 0.70, np.nan], "dice_anterior_lcc": [0.85, 0.72, np.nan],
        "dice_posterior": [0.90, 0.60, 0.70], "dice_posterior_lcc": [0.90, 0.50, 0.70],
    })
    decision = choose_postprocessing(per_case, ["anterior", "posterior"])
    assert decision["keep_largest_component"] == [1]
    assert np.isclose(decision["dice_before"]["anterior"], 0.75)
    assert np.isclose(decision["dice_after"]["anterior"], 0.785)
    assert decision["dice_after"]["posterior"] == decision["dice_before"]["posterior"]
    json.dumps(decision)  # goes to a metrics file as is


def test_equal_dice_does_not_choose_postprocessing():
    per_case = pd.DataFrame({"dice_a": [0.8, 0.9], "dice_a_lcc": [0.8, 0.9]})
    assert choose_postprocessing(per_case, ["a"])["keep_largest_component"] == []


def test_apply_follows_the_decision_and_none_is_the_identity():
    labels = two_class_map()
    assert apply_postprocessing(labels, None) is labels
    assert np.array_equal(apply_postprocessing(labels, {"keep_largest_component": []}), labels)
    applied = apply_postprocessing(labels, {"keep_largest_component": [2]})
    assert np.array_equal(applied, keep_largest_component(labels, [2]))
