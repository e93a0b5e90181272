"""Bootstrap confidence intervals for reports and champion/challenger comparison."""

from __future__ import annotations

import numpy as np
import pytest

from segflow.metrics.statistics import bootstrap_ci, paired_bootstrap_difference

DICE = np.random.default_rng(0).uniform(0.6, 0.95, size=30)


def test_same_seed_gives_the_same_interval_and_another_seed_differs():
    assert bootstrap_ci(DICE, seed=3) == bootstrap_ci(DICE, seed=3)
    assert bootstrap_ci(DICE, seed=3)["low"] != bootstrap_ci(DICE, seed=4)["low"]


def test_interval_covers_the_mean_and_has_width():
    ci = bootstrap_ci(DICE)
    assert ci["low"] < ci["mean"] < ci["high"]
    assert ci["mean"] == pytest.approx(DICE.mean()) and ci["n"] == 30


def test_higher_confidence_gives_a_wider_interval():
    narrow, wide = bootstrap_ci(DICE, confidence=0.8), bootstrap_ci(DICE, confidence=0.99)
    assert wide["low"] < narrow["low"] and wide["high"] > narrow["high"]


def test_constant_sample_gives_a_zero_width_interval():
    ci = bootstrap_ci([0.7] * 10)
    assert ci["low"] == pytest.approx(0.7) and ci["high"] == pytest.approx(0.7)


def test_nans_are_dropped_and_a_single_value_has_no_spread():
    assert bootstrap_ci([0.5, np.nan, 0.7])["n"] == 2
    assert bootstrap_ci([0.8, np.nan]) == {"mean": 0.8, "low": 0.8, "high": 0.8, "n": 1}


def test_paired_difference_of_identical_arrays_is_zero():
    diff = paired_bootstrap_difference(DICE, DICE)
    assert diff["mean"] == diff["low"] == diff["high"] == 0.0


def test_paired_difference_sees_a_consistent_improvement():
    diff = paired_bootstrap_difference(DICE + 0.02, DICE)
    assert diff["mean"] == pytest.approx(0.02) and diff["low"] > 0


def test_paired_difference_needs_the_same_cases():
    with pytest.raises(ValueError, match="same number of cases"):
        paired_bootstrap_difference(DICE, DICE[:-1])
