"""Bootstrap confidence intervals, the paired Wilcoxon test and Holm's correction for reports and
model comparison."""

from __future__ import annotations

import numpy as np
import pytest

from segflow.metrics.statistics import bootstrap_ci, holm_adjust, paired_bootstrap_difference, paired_wilcoxon

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


# Darwin's paired plant heights (cross- minus self-fertilised), the classic Wilcoxon example:
# exact two-sided p = 0.041259765625 (scipy.stats.wilcoxon documentation), W = 24.
DARWIN = np.array([6, 8, 14, 16, 23, 24, 28, 29, 41, -48, 49, 56, 60, -67, 75], dtype=float)


def test_wilcoxon_matches_the_published_value():
    result = paired_wilcoxon(DARWIN + 100, np.full(DARWIN.size, 100.0))
    assert result["statistic"] == 24.0 and result["n"] == 15
    assert result["p_value"] == pytest.approx(0.041259765625)


def test_wilcoxon_is_two_sided():
    assert paired_wilcoxon(DARWIN, np.zeros(15))["p_value"] == pytest.approx(
        paired_wilcoxon(np.zeros(15), DARWIN)["p_value"])


def test_wilcoxon_of_identical_models_is_p_one():
    assert paired_wilcoxon(DICE, DICE) == {"statistic": 0.0, "p_value": 1.0, "n": 30}


def test_wilcoxon_drops_pairs_with_a_nan_and_needs_paired_lengths():
    a, b = DARWIN.copy(), np.zeros(15)
    a[0] = np.nan
    assert paired_wilcoxon(a, b)["n"] == 14
    with pytest.raises(ValueError, match="same number of cases"):
        paired_wilcoxon(DICE, DICE[:-1])


def test_bootstrap_interval_of_a_paired_difference_contains_the_true_shift():
    rng = np.random.default_rng(7)
    before = rng.uniform(0.7, 0.9, size=60)
    after = before + 0.03 + rng.normal(0, 0.02, size=60)
    diff = paired_bootstrap_difference(after, before)
    assert diff["low"] < 0.03 < diff["high"] and diff["low"] > 0


def test_holm_correction_steps_down_and_keeps_order_and_nans():
    adjusted = holm_adjust([0.01, 0.04, 0.03, np.nan])
    assert adjusted[:3] == pytest.approx([0.03, 0.06, 0.06]) and np.isnan(adjusted[3])
    assert holm_adjust([0.5, 0.9]) == [1.0, 1.0]
