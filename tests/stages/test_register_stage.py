"""register's gate: a model is registered only when its cross-validation Dice is good enough for
its dataset (a number per dataset, or above the dataset's trivial baseline), and the reason is said
either way."""

from __future__ import annotations

import pytest

from segflow.config import RegisterConfig
from segflow.stages.register import describe, gate, trivial_dice

FINGERPRINT = {"class_frequencies": {"0": {"voxel_fraction": 0.75}, "1": {"voxel_fraction": 0.2},
                                     "2": {"voxel_fraction": 0.05}}}


def test_the_gate_passes_at_or_above_the_minimum_and_says_why():
    assert gate({"dice_mean": 0.8}, 0.8, FINGERPRINT, "Hippocampus") == (
        True, "mean Dice 0.8000 meets register.min_mean_dice 0.8000 for Hippocampus")
    passed, reason = gate({"dice_mean": 0.79}, 0.8, FINGERPRINT)
    assert not passed and "below register.min_mean_dice" in reason


def test_auto_gates_on_the_datasets_own_trivial_baseline():
    baseline = (2 * 0.2 / 1.2 + 2 * 0.05 / 1.05) / 2  # each class predicted everywhere
    assert trivial_dice(FINGERPRINT) == pytest.approx(baseline)
    passed, reason = gate({"dice_mean": 0.3}, "auto", FINGERPRINT, "membranes")
    assert passed and f"above the trivial baseline {baseline:.4f} of membranes" in reason
    passed, reason = gate({"dice_mean": 0.2}, "auto", FINGERPRINT, "membranes")
    assert not passed and "not above the trivial baseline" in reason


def test_the_floor_is_chosen_per_dataset():
    rule = RegisterConfig(min_mean_dice={"Hippocampus": 0.8, "default": "auto"})
    assert rule.dice_floor("Hippocampus") == 0.8 and rule.dice_floor("membranes") == "auto"
    assert RegisterConfig(min_mean_dice={"Hippocampus": 0.8}).dice_floor("other") == "auto"
    assert RegisterConfig(min_mean_dice=0.5).dice_floor("any") == 0.5


def test_metrics_without_a_mean_dice_are_refused():
    assert gate({}, 0.0, FINGERPRINT) == (False, "evaluate produced no dice_mean")


def test_the_decision_reads_as_a_sentence():
    assert describe({"registered": False, "gate": "mean Dice 0.1 is below"}) == "not registered: mean Dice 0.1 is below"
    decision = {"registered": True, "promoted": True, "model_id": "m1", "reason": "no champion yet"}
    assert describe(decision) == "registered m1 as champion: no champion yet"
