"""nnU-Net's `fold all` through real `dvc repro`: split.folds [0, all] trains fold 0 and a model on
every case; evaluate scores fold 0 out of fold, and register ships the model trained on all,
with fold 0's scores as its estimate; `segflow predict` runs it."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import BIN, copy_project, run

from segflow.models.model_file import load_model_file
from segflow.paths import Paths

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture(scope="module")
def fold_all_project(preprocessed_template, tmp_path_factory):
    project = copy_project(preprocessed_template, tmp_path_factory.mktemp("fold-all") / "project")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["split"]["folds"] = [0, "all"]
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run([str(BIN / "dvc"), "repro"], project)
    return project


def test_fold_all_trains_on_every_case_without_validation(fold_all_project):
    paths = Paths(fold_all_project)
    summary = json.loads(paths.train_summary_for("all").read_text())
    assert summary["fold"] == "all" and summary["val_dice_mean"] is None
    assert paths.model_for(0).is_file()


def test_evaluate_scores_the_numbered_fold_and_register_ships_the_model_on_all(fold_all_project):
    paths = Paths(fold_all_project)
    metrics = json.loads(paths.metrics.read_text())
    assert metrics["folds"] == [0]
    assert load_model_file(paths.ensemble).folds == ["all"]
    registration = json.loads(paths.registration.read_text())
    entry = json.loads((fold_all_project / registration["model_dir"] / "entry.json").read_text())
    assert entry["folds"] == ["all"] and entry["evaluated_folds"] == [0]
    assert {c["fold"] for c in entry["compute"]} == {0, "all"}
    assert paths.report_page.is_file()


def test_predict_runs_the_model_trained_on_all(fold_all_project, tmp_path):
    case = next((fold_all_project / "data/Task04_Hippocampus/imagesTr").glob("*.nii.gz"))
    run([str(BIN / "segflow"), "predict", "--model", "champion", "--input", str(case), "--output", str(tmp_path),
         "--no-tta"], fold_all_project)
    assert (tmp_path / case.name).is_file()
