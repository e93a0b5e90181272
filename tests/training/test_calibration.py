"""The budget stage's measurement: a few timed training steps, loader batches and a validation
pass of the planned networks (3d and 2d) on this machine, and the training plan they give, read back."""

from __future__ import annotations

import pytest
from planning.planning_fixtures import hippocampus_fingerprint, repo_params
from training_fixtures import CASES, synthetic_cache, tiny_params, write_fold_project  # noqa: F401

from segflow.planning.configurations import configuration_params
from segflow.planning.plan import TrainingPlan, resolve_params
from segflow.planning.planner import make_plan
from segflow.training.calibration import loading_timer, training_plan


def per_sample_loader(seconds: float):
    """A loading timer for a loader costing `seconds` per sample (a real one needs cached cases)."""
    return lambda params: seconds * params.train.batch_size


def test_no_budget_plans_no_budget_and_keeps_the_epochs():
    params = repo_params()
    plan = make_plan(hippocampus_fingerprint(), params, cuda_available=False)
    training = training_plan(plan, params, hippocampus_fingerprint(), 176, 44, 3, per_sample_loader(0.01))
    assert training == TrainingPlan()
    resolved = resolve_params(params, plan)
    assert configuration_params(resolved, plan, training, "3d") is resolved


@pytest.mark.slow  # times real training steps of the Hippocampus networks, 3d and 2d (~15 s)
def test_a_budget_is_measured_on_the_planned_networks_and_decides_the_epochs(tmp_path):
    params = repo_params({"train": {"budget": "3m", "budget_min_epochs": 1, "device": "cpu"}})
    plan = make_plan(hippocampus_fingerprint(), params, cuda_available=False)
    training = training_plan(plan, params, hippocampus_fingerprint(), 176, 44, 3, per_sample_loader(0.002))

    budget = training.budget
    assert budget.configurations == ["3d"] and budget.folds == [0]  # 3 min: 2d cannot converge beside it
    assert set(budget.costs) == {"3d", "2d"} and training.slice_configuration.slice_axis == 0
    assert training.slice_configuration.iterations_per_epoch == 44  # the 3d configuration's steps: 176 cases / 4
    assert all(cost["epoch_s"] > 0 and cost["validation_s"] > 0 for cost in budget.costs.values())
    # train.num_workers 0: the loader's batches run between the steps, so an epoch pays both
    slices = training.slice_configuration
    assert budget.costs["2d"]["load_s"] == pytest.approx(0.002 * slices.batch_size)
    for cost in budget.costs.values():
        assert cost["epoch_s"] == pytest.approx(44 * (cost["step_s"] + cost["load_s"]), rel=1e-3)
    assert budget.predicted_total_minutes <= 3.0
    trained = configuration_params(resolve_params(params, plan), plan, training, "3d")
    assert trained.train.epochs == budget.epochs != params.train.epochs
    training.save(tmp_path / "training.json")
    assert TrainingPlan.load(tmp_path / "training.json") == training


@pytest.mark.slow  # times real training steps of the Hippocampus 3d network (~5 s)
def test_a_budget_too_small_for_the_network_is_refused_before_the_2d_configuration_is_timed():
    from segflow.config import ConfigError

    params = repo_params({"train": {"budget": "1m", "budget_min_epochs": 10_000, "device": "cpu"}})
    plan = make_plan(hippocampus_fingerprint(), params, cuda_available=False)
    timed = []

    def recording_loader(configured):
        timed.append(configured.preprocess.patch_size)
        return 0.001

    with pytest.raises(ConfigError, match="under train.budget_min_epochs 10000; give at least"):
        training_plan(plan, params, hippocampus_fingerprint(), 176, 44, 3, recording_loader)
    assert timed == [plan.patch_size]  # the 3d configuration only


def test_the_loading_timer_times_the_trainers_own_loader_on_cached_cases(tmp_path, synthetic_cache):
    from segflow.paths import Paths

    write_fold_project(tmp_path / "project", synthetic_cache)
    time_loading = loading_timer(Paths(tmp_path / "project"), CASES, ignore_label=None)
    held, streamed = time_loading(tiny_params()), time_loading(tiny_params(cache_ram_gb=0))
    assert 0 < held < 10 and 0 < streamed < 10
