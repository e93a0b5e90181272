"""The budget stage's measurement: a few timed training steps and a validation pass of the
planned networks (3d and 2d) on this machine, and the training plan they give, read back."""

from __future__ import annotations

import pytest
from planning.planning_fixtures import hippocampus_fingerprint, repo_params

from segflow.planning.configurations import configuration_params
from segflow.planning.plan import TrainingPlan, resolve_params
from segflow.planning.planner import make_plan
from segflow.training.calibration import training_plan


def test_no_budget_plans_no_budget_and_keeps_the_epochs():
    params = repo_params()
    plan = make_plan(hippocampus_fingerprint(), params, cuda_available=False)
    training = training_plan(plan, params, hippocampus_fingerprint(), 176, 44, 3)
    assert training == TrainingPlan()
    resolved = resolve_params(params, plan)
    assert configuration_params(resolved, plan, training, "3d") is resolved


@pytest.mark.slow  # times real training steps of the Hippocampus networks, 3d and 2d (~15 s)
def test_a_budget_is_measured_on_the_planned_networks_and_decides_the_epochs(tmp_path):
    params = repo_params({"train": {"budget": "3m", "budget_min_epochs": 1, "device": "cpu"}})
    plan = make_plan(hippocampus_fingerprint(), params, cuda_available=False)
    training = training_plan(plan, params, hippocampus_fingerprint(), 176, 44, 3)

    budget = training.budget
    assert budget.configurations == ["3d"] and budget.folds == [0]  # 3 min: 2d cannot converge beside it
    assert set(budget.costs) == {"3d", "2d"} and training.slice_configuration.slice_axis == 0
    assert training.slice_configuration.iterations_per_epoch == 44  # the 3d configuration's steps: 176 cases / 4
    assert all(cost["epoch_s"] > 0 and cost["validation_s"] > 0 for cost in budget.costs.values())
    assert budget.predicted_total_minutes <= 3.0
    trained = configuration_params(resolve_params(params, plan), plan, training, "3d")
    assert trained.train.epochs == budget.epochs != params.train.epochs
    training.save(tmp_path / "training.json")
    assert TrainingPlan.load(tmp_path / "training.json") == training
