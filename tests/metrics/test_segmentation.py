"""Dice and HD95 per foreground class: the numbers a user reads in metrics.json."""

from __future__ import annotations

import math

import numpy as np
import pytest

from segflow.metrics.segmentation import dice_per_class, hd95_per_class


def cube(shape=(20, 20, 20), start=(4, 4, 4), size=6, value=1, into=None) -> np.ndarray:
    labels = np.zeros(shape, np.uint8) if into is None else into
    x, y, z = start
    labels[x:x + size, y:y + size, z:z + size] = value
    return labels


def test_dice_perfect_match_is_one_per_class():
    truth = cube(value=1)
    cube(start=(12, 12, 12), value=2, into=truth)
    assert dice_per_class(truth.copy(), truth, 3) == [1.0, 1.0]


def test_dice_disjoint_is_zero():
    prediction = cube(start=(0, 0, 0))
    truth = cube(start=(10, 10, 10))
    assert dice_per_class(prediction, truth, 2) == [0.0]


def test_dice_half_overlap():
    prediction = cube(start=(4, 4, 4))
    truth = cube(start=(7, 4, 4))  # shares half of each cube
    assert dice_per_class(prediction, truth, 2) == [pytest.approx(0.5)]


def test_dice_is_one_when_class_absent_from_both():
    truth = cube(value=1)  # class 2 absent from prediction and truth
    assert dice_per_class(truth.copy(), truth, 3) == [1.0, 1.0]


def test_hd95_of_identical_masks_is_zero():
    truth = cube()
    assert hd95_per_class(truth.copy(), truth, 2) == [0.0]


def test_hd95_is_nan_when_prediction_is_empty():
    truth = cube()
    (value,) = hd95_per_class(np.zeros_like(truth), truth, 2)
    assert math.isnan(value)


def test_hd95_scales_with_spacing():
    prediction = cube(start=(4, 4, 4))
    truth = cube(start=(7, 4, 4))  # shifted 3 voxels along the first axis
    (voxels,) = hd95_per_class(prediction, truth, 2)
    (millimetres,) = hd95_per_class(prediction, truth, 2, spacing=[2.0, 1.0, 1.0])
    assert voxels == pytest.approx(3.0)
    assert millimetres == pytest.approx(6.0)
