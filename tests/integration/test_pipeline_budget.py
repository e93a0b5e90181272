"""train.budget end to end through real `dvc repro`: a tiny budget on the tiny MSD project plans
both configurations (3d and 2d) before training (the budget stage), trains both on the same fold
without planning or preparing the data again, evaluate selects one (or their ensemble) by out-of-fold Dice, register ships that
choice, `segflow predict` runs it, and training the same plan again gives the same models."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import BIN, copy_project, run

from segflow.models.model_file import load_model_file
from segflow.paths import Paths

pytestmark = [pytest.mark.slow, pytest.mark.integration]

BUDGET = {"budget": "12s", "budget_min_epochs": 1, "budget_converged_epochs": 1}


@pytest.fixture(scope="module")
def budget_run(preprocessed_template, tmp_path_factory):
    project = copy_project(preprocessed_template, tmp_path_factory.mktemp("budget") / "project")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"].update(BUDGET)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    console = run([str(BIN / "dvc"), "repro", "register"], project).stdout
    return project, console


def test_the_budget_is_planned_before_training_and_the_data_is_not_prepared_again(budget_run):
    project, console = budget_run
    training = json.loads(Paths(project).training_plan.read_text())
    budget = training["budget"]
    assert budget["configurations"] == ["3d", "2d"] and budget["folds"] == [0]
    assert budget["epochs"] >= 1 and budget["predicted_total_minutes"] <= 0.2
    assert training["slice_configuration"]["slice_axis"] == 0
    ran = [line.split("'")[1] for line in console.splitlines() if line.startswith("Running stage")]
    assert ran[:2] == ["budget", "train@0"]  # neither the plan nor the preprocessing again
    assert console.index("budget: train.budget 12s") < console.index("Running stage 'train@0'")


def test_both_configurations_train_the_planned_epochs_and_say_their_minutes(budget_run):
    project, console = budget_run
    paths, budget = Paths(project), json.loads(Paths(project).training_plan.read_text())["budget"]
    index = json.loads(paths.configurations_index(0).read_text())
    assert index == {"native": "3d", "configurations": ["3d", "2d"]}
    for name in ("3d", "2d"):
        own = paths.of_configuration(name, "3d")
        summary = json.loads(own.train_summary_for(0).read_text())
        assert summary["epochs"] == budget["epochs"]
        assert summary["predicted_seconds"] == pytest.approx(budget["predicted_minutes"][name] * 60)
        assert f"train: fold 0 {name} trained {budget['epochs']} epochs in" in console
    two_d = load_model_file(paths.of_configuration("2d").model_for(0))
    assert two_d.network_args["slice_axis"] == 0 and two_d.patch_size[0] == 1


def test_evaluate_selects_by_out_of_fold_dice_and_register_ships_the_choice(budget_run):
    project, _ = budget_run
    paths = Paths(project)
    choice = json.loads(paths.configuration_choice.read_text())
    assert set(choice["dice_mean"]) == {"3d", "2d", "ensemble"}
    assert choice["selected"] == max(choice["dice_mean"], key=lambda c: (choice["dice_mean"][c], c == "3d"))
    registration = json.loads(paths.registration.read_text())
    assert registration["registered"]
    model_dir = project / registration["model_dir"]
    entry = json.loads((model_dir / "entry.json").read_text())
    assert entry["configuration"] == choice
    assert {(c["configuration"], c["fold"]) for c in entry["compute"]} == {("3d", 0), ("2d", 0)}
    shipped = load_model_file(paths.ensemble)
    if choice["selected"] == "ensemble":
        assert [c.patch_size[0] == 1 for c in shipped.configurations()] == [False, True]
    else:
        assert not shipped.companions and (shipped.network_args.get("slice_axis") == 0) == (choice["selected"] == "2d")
    assert f"Configuration: {choice['selected']}" in (model_dir / "MODEL_CARD.md").read_text()


def test_predict_runs_the_shipped_choice(budget_run, tmp_path):
    project, _ = budget_run
    case = next((project / "data/Task04_Hippocampus/imagesTr").glob("*.nii.gz"))
    run([str(BIN / "segflow"), "predict", "--model", "champion", "--input", str(case), "--output", str(tmp_path),
         "--no-tta"], project)
    assert (tmp_path / case.name).is_file()


def test_the_same_plan_trains_the_same_models(budget_run):
    project, _ = budget_run
    paths = Paths(project)
    models = [paths.model_for(0), paths.of_configuration("2d").model_for(0)]
    before = [load_model_file(m).state_dicts[0] for m in models]
    run(["rm", "-rf", str(paths.checkpoints_for(0))], project)  # no resume: both train from scratch
    run([str(BIN / "dvc"), "repro", "--force", "--single-item", "train@0"], project)
    for model, weights in zip(models, before, strict=True):
        again = load_model_file(model).state_dicts[0]
        assert all(again[key].equal(value) for key, value in weights.items()), model


def test_a_dispatched_pipeline_measures_the_budget_on_the_pool_only_when_it_changed(budget_run):
    """With the decision up to date (DVC's status), a dispatched run keeps it rather than time the
    steps again on the pool (the same plan, the same model); a new budget is measured there."""
    from segflow.orchestration import handoff
    from segflow.overrides import apply_overrides

    project, _ = budget_run
    assert not handoff.budget_runs_as_job(project)
    apply_overrides(project / "params.yaml", ["train.budget=13s"])
    try:
        assert handoff.budget_runs_as_job(project)
    finally:
        apply_overrides(project / "params.yaml", [f"train.budget={BUDGET['budget']}"])
