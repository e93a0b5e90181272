"""Champion/challenger: promote only a model that is better on the same cases, and say why not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from segflow.config import RegisterConfig
from segflow.registry.promotion import challenge

RULE = RegisterConfig(min_mean_dice=0.0)  # min_gain 0, max_p_value 0.05, min_paired_cases 5


def scores(dice: np.ndarray, cases: list[str] | None = None) -> pd.DataFrame:
    """A per-case table as evaluate writes it (two classes with the same Dice, raw columns too)."""
    cases = cases or [f"case_{i:03d}" for i in range(len(dice))]
    return pd.DataFrame({"case_id": cases, "fold": 0, "dice_anterior": dice, "dice_posterior": dice,
                         "hd95_anterior": 1.0, "dice_anterior_raw": 0.0, "dice_posterior_raw": 0.0})


BASE = np.random.default_rng(0).uniform(0.80, 0.90, size=30)


def test_first_model_becomes_champion():
    verdict = challenge(scores(BASE), None, None, None, RULE)
    assert verdict.promote and "no champion yet" in verdict.reason


def test_consistently_better_model_is_promoted_with_the_numbers():
    verdict = challenge(scores(BASE + 0.02), "old", scores(BASE), 0.85, RULE)
    assert verdict.promote and verdict.reason.startswith("better")
    assert verdict.n_paired == 30 and verdict.mean_gain == pytest.approx(0.02)
    assert verdict.p_value < 0.001 and verdict.gain_ci95[0] > 0


def test_identical_model_stays_candidate():
    verdict = challenge(scores(BASE), "old", scores(BASE), 0.85, RULE)
    assert not verdict.promote and verdict.reason.startswith("not better") and verdict.p_value == 1.0


def test_worse_model_stays_candidate():
    verdict = challenge(scores(BASE - 0.01), "old", scores(BASE), 0.85, RULE)
    assert not verdict.promote and "not better" in verdict.reason and "old" in verdict.reason


def test_small_noisy_gain_is_not_significant():
    noise = np.random.default_rng(1).normal(0, 0.05, size=30)
    noise -= noise.mean() - 0.002  # mean gain +0.002 buried in noise
    verdict = challenge(scores(BASE + noise), "old", scores(BASE), 0.85, RULE)
    assert not verdict.promote and verdict.reason.startswith("not significantly better")
    assert verdict.p_value > RULE.max_p_value


def test_min_gain_is_respected():
    rule = RegisterConfig(min_mean_dice=0.0, min_gain=0.05)
    verdict = challenge(scores(BASE + 0.02), "old", scores(BASE), 0.85, rule)
    assert not verdict.promote and "register.min_gain 0.05" in verdict.reason


def test_only_common_cases_are_paired():
    champion = scores(BASE[:20], [f"case_{i:03d}" for i in range(20)])
    challenger = scores(BASE[10:] + 0.03, [f"case_{i:03d}" for i in range(10, 30)])
    verdict = challenge(challenger, "old", champion, 0.85, RULE)
    assert verdict.n_paired == 10 and verdict.promote


def test_too_few_common_cases_is_not_comparable():
    champion = scores(BASE[:10], [f"a_{i}" for i in range(10)])
    challenger = scores(BASE[:10] + 0.1, [f"b_{i}" for i in range(10)])
    verdict = challenge(challenger, "old", champion, 0.85, RULE)
    assert not verdict.promote and "only 0 evaluation case(s) in common with champion old" in verdict.reason
    assert "segflow models promote" in verdict.reason


def test_champion_without_per_case_scores_is_compared_on_means_and_says_so():
    better = challenge(scores(BASE), "old", None, float(BASE.mean()) - 0.01, RULE)
    worse = challenge(scores(BASE), "old", None, float(BASE.mean()) + 0.01, RULE)
    assert better.promote and "means only" in better.reason
    assert not worse.promote
