"""register's gate: a model is registered only when its cross-validation Dice is good enough,
and the reason is said either way."""

from __future__ import annotations

from segflow.stages.register import describe, gate


def test_the_gate_passes_at_or_above_the_minimum_and_says_why():
    assert gate({"dice_mean": 0.8}, 0.8) == (True, "mean Dice 0.8000 meets register.min_mean_dice 0.8000")
    passed, reason = gate({"dice_mean": 0.79}, 0.8)
    assert not passed and "below register.min_mean_dice" in reason


def test_metrics_without_a_mean_dice_are_refused():
    assert gate({}, 0.0) == (False, "evaluate produced no dice_mean")


def test_the_decision_reads_as_a_sentence():
    assert describe({"registered": False, "gate": "mean Dice 0.1 is below"}) == "not registered: mean Dice 0.1 is below"
    decision = {"registered": True, "promoted": True, "model_id": "m1", "reason": "no champion yet"}
    assert describe(decision) == "registered m1 as champion: no champion yet"
