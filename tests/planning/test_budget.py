"""train.budget: the pure decision (step times + budget + folds -> epochs and configurations) and
the budget's spelling (the measurement: tests/training/test_calibration.py)."""

from __future__ import annotations

import pytest
from planning_fixtures import repo_params

from segflow.config import ConfigError
from segflow.planning.budget import (
    MAX_EPOCHS,
    ConfigurationCost,
    affordable_epochs,
    decide,
    parse_budget,
    run_seconds,
    validations,
)

THREE_D = ConfigurationCost("3d", epoch_s=6.0, validation_s=2.0)
TWO_D = ConfigurationCost("2d", epoch_s=3.0, validation_s=4.0)


@pytest.mark.parametrize(("text", "seconds"), [("20m", 1200), ("8h", 28800), ("1h30m", 5400), ("90s", 90),
                                               ("2.5 min", 150), (" 10M ", 600)])
def test_budgets_are_spelled_as_durations(text, seconds):
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["20", "twenty minutes", "20 parsecs", "-5m", "0m", "m", ""])
def test_a_budget_that_is_not_a_duration_is_refused_by_params(text):
    with pytest.raises(ConfigError, match="train.budget"):
        repo_params({"train": {"budget": text}})


def test_validation_runs_every_val_every_epochs_and_after_the_last():
    assert [validations(e, 5) for e in (1, 4, 5, 6, 10, 12)] == [1, 1, 1, 2, 2, 3]


def test_the_epochs_bought_fill_the_budget_without_passing_it():
    epochs = affordable_epochs(1200, [THREE_D], n_folds=1, val_every=5)
    assert run_seconds([THREE_D], epochs, 1, 5) <= 1200 < run_seconds([THREE_D], epochs + 1, 1, 5)
    assert epochs == 187  # 187 * 6 s + 38 validations * 2 s = 1198 s


def test_the_budget_is_shared_by_every_fold():
    one, five = (affordable_epochs(1200, [THREE_D], n, 5) for n in (1, 5))
    assert five == 37 and one > 4.5 * five  # 5 x (37 * 6 s + 8 * 2 s) = 1190 s


def test_epochs_stop_at_nnunets_thousand():
    assert affordable_epochs(10**7, [THREE_D], 1, 5) == MAX_EPOCHS


def test_a_small_budget_trains_the_native_configuration_only():
    decision = decide(600, [THREE_D, TWO_D], n_folds=1, val_every=5, min_epochs=20, converged_epochs=100)
    assert decision.configurations == ["3d"]
    assert decision.epochs == affordable_epochs(600, [THREE_D], 1, 5)
    assert "2d left out" in decision.reasons["configurations"]
    assert decision.predicted_total_s <= 600


def test_a_budget_that_lets_both_converge_cross_validates_both():
    decision = decide(3600, [THREE_D, TWO_D], n_folds=1, val_every=5, min_epochs=20, converged_epochs=100)
    assert decision.configurations == ["3d", "2d"]
    assert decision.epochs == affordable_epochs(3600, [THREE_D, TWO_D], 1, 5) >= 100
    assert set(decision.predicted_seconds) == {"3d", "2d"}
    assert decision.predicted_total_s == pytest.approx(sum(decision.predicted_seconds.values()), abs=0.2)


def test_a_budget_too_small_for_the_minimum_is_refused_with_what_it_needs():
    with pytest.raises(ConfigError, match=r"buys 9 epochs .* at least 3 min"):
        decide(60, [THREE_D], n_folds=1, val_every=5, min_epochs=20, converged_epochs=100)


def test_a_budget_that_would_train_every_fold_says_so():
    rich = decide(4 * 3600, [THREE_D], n_folds=1, val_every=5, min_epochs=20, converged_epochs=100, all_folds=5)
    assert rich.reasons["folds"].startswith("the budget would also train all 5 folds for ")
    poor = decide(600, [THREE_D], n_folds=1, val_every=5, min_epochs=20, converged_epochs=100, all_folds=5)
    assert "folds" not in poor.reasons
