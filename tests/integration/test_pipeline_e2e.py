"""End to end: real `dvc repro` of every stage on a few real cases with two cross-validation folds,
then caching, adding a fold, and predicting with the fold ensemble."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml
from conftest import BIN, run

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def stages_run(output: str) -> list[str]:
    return re.findall(r"Running stage '([\w@]+)'", output)


def set_param(project: Path, section: str, key: str, value) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params[section][key] = value
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


# Credentials a user may have in the environment; none may reach a log, a config or an artifact.
SECRETS = {"WANDB_API_KEY": "local-0123456789abcdef0123456789abcdef01234567",
           "SEGFLOW_GIT_TOKEN": "ghp_segflowTestTokenNeverLogged0000000000",
           "AWS_SECRET_ACCESS_KEY": "awsSecretNeverLogged/0000000000000000000"}


@pytest.fixture(scope="module")
def reproduced(tiny_project_template, tmp_path_factory):
    """One full pipeline run shared by the tests of this module (it is the slow part); W&B
    offline into a folder of its own, with credentials in the environment."""
    import shutil

    project = tmp_path_factory.mktemp("e2e") / "project"
    shutil.copytree(tiny_project_template, project, symlinks=True)
    set_param(project, "split", "folds", [0, 1])
    set_param(project, "register", "export", ["torchscript", "onnx"])  # off in the other tiny projects
    run(["git", "commit", "-qam", "two folds"], project)  # a pristine checkout: provenance has no -dirty
    env = {**SECRETS, "WANDB_DIR": str(project.parent / "wandb-e2e"), "SEGFLOW_TRACKING": "on"}
    done = run([str(BIN / "dvc"), "repro"], project, env={**env, "SEGFLOW_RUN_GROUP": ""})
    return project, done.stdout + done.stderr


def test_every_stage_runs_in_order_with_one_training_per_fold(reproduced):
    _, output = reproduced
    assert stages_run(output) == ["ingest", "validate", "plan", "preprocess", "budget", "train@0", "train@1", "evaluate",
                                  "register", "report"]


def test_the_results_page_links_the_runs_overlays_of_the_worst_cases_and_the_model_card(reproduced):
    project, _ = reproduced
    page = (project / "artifacts/report/index.html").read_text()
    index = json.loads((project / "artifacts/evaluate/overlays/index.json").read_text())
    assert index["worst"] and all(f"overlays/{c['file']}" in page for c in index["worst"] + index["best"])
    assert "offline-run-" in page and "Model card" in page and "anterior" in page


def test_plan_fills_the_auto_values_and_explicit_ones_win(reproduced):
    project, _ = reproduced
    plan = json.loads((project / "artifacts/plan/plan.json").read_text())
    fingerprint = json.loads((project / "artifacts/plan/fingerprint.json").read_text())
    assert fingerprint["n_cases"] == 11
    assert plan["patch_size"] == [32, 48, 32] and plan["batch_size"] == 2  # explicit in the tiny params
    assert plan["target_spacing"] == [1.0, 1.0, 1.0]
    assert [c["scheme"] for c in plan["normalisation"]] == ["zscore"]  # MRI


def test_validation_reports_the_sources_real_defects(reproduced):
    project, _ = reproduced
    report = json.loads((project / "artifacts/validate/report.json").read_text())
    found = {(f["case_id"], f["rule"]) for f in report["findings"]}
    assert ("hippocampus_010", "image_present") in found
    assert ("hippocampus_118", "label_present") in found
    assert ("hippocampus_243", "label_integer_dtype") in found
    assert ("hippocampus_281", "orphan_file") in found
    assert set(report["quarantined"]) == {"hippocampus_010", "hippocampus_118"}
    assert "hippocampus_243" in report["kept"] and len(report["kept"]) == 11


def test_metrics_are_real_dice_per_class(reproduced):
    project, _ = reproduced
    metrics = json.loads((project / "artifacts/evaluate/metrics.json").read_text())
    assert metrics["folds"] == [0, 1] and metrics["n_cases"] >= 4  # out-of-fold cases of both folds
    for key in ("dice_mean", "dice_anterior", "dice_posterior", "dice_mean_fold_0", "dice_mean_fold_1"):
        assert 0.0 <= metrics[key] <= 1.0
    low, high = metrics["dice_mean_ci95"]
    assert low <= metrics["dice_mean"] <= high
    per_case = (project / "artifacts/evaluate/per_case.csv").read_text().splitlines()
    assert len(per_case) == metrics["n_cases"] + 1
    assert list((project / "artifacts/evaluate/overlays").glob("*.png"))
    decision = json.loads((project / "artifacts/evaluate/postprocessing.json").read_text())
    assert set(decision["keep_largest_component"]) <= {1, 2}
    for fold in (0, 1):
        history = (project / f"artifacts/train/fold_{fold}/history.csv").read_text().splitlines()
        assert history[0].startswith("epoch,train_loss") and len(history) == 3


def dataset_registry(project: Path) -> Path:
    (folder,) = [p for p in (project / "registry").iterdir() if p.is_dir() and not p.name.startswith(".")]
    return folder


def test_register_records_weights_params_metrics_and_provenance(reproduced):
    project, _ = reproduced
    registry = dataset_registry(project)
    assert registry.name.startswith("Hippocampus-")  # one registry per dataset and task
    champion = registry / "models" / json.loads((registry / "index.json").read_text())["champion"]
    entry = json.loads((champion / "entry.json").read_text())
    assert entry["task"]["spatial_dims"] == 3 and entry["task"]["n_channels"] == 1
    assert (champion / "model.pt").is_file() and (champion / "per_case.csv").is_file()
    card = (champion / "MODEL_CARD.md").read_text()
    for heading in ("## Intended use", "## Data", "## Metrics", "95% bootstrap CI", "## Compute", "## Limits"):
        assert heading in card
    assert (champion / "bundle" / "models" / "model.ts").is_file() and entry["export"]["formats"]
    assert (champion / "params.yaml").read_text() == (project / "params.yaml").read_text()
    head = run(["git", "rev-parse", "HEAD"], project).stdout.strip()
    assert entry["git_commit"] == head and entry["git_modified"] == []  # a pristine checkout: no -dirty
    assert entry["data_hash"] == yaml.safe_load((project / "data.dvc").read_text())["outs"][0]["md5"]
    from segflow.models.model_file import load_model_file

    model = load_model_file(champion / "model.pt")
    assert model.folds == [0, 1] and len(model.state_dicts) == 2  # the fold ensemble
    assert model.postprocessing == json.loads((project / "artifacts/evaluate/postprocessing.json").read_text())
    assert model.preprocessing["normalisation"][0]["scheme"] == "zscore"


def wandb_runs(project: Path) -> list[list[dict]]:
    """The records of every offline W&B run of the module's pipeline run."""
    runs = sorted((project.parent / "wandb-e2e" / "wandb").glob("offline-run-*"))
    out = [run([str(BIN / "wandb"), "leet", "inspect", "--json", str(r)], project, timeout=120).stdout
           for r in runs]
    return [[json.loads(line) for line in text.splitlines() if line.strip()] for text in out]


def of_type(records: list[dict], kind: str) -> list[dict]:
    return [r[kind] for r in records if r["type"] == kind]


def test_wandb_record_is_one_group_with_full_config_and_linked_artifacts(reproduced):
    project, _ = reproduced
    runs = {of_type(r, "run")[0]["job_type"] + str(i): r for i, r in enumerate(wandb_runs(project))}
    headers = [of_type(r, "run")[0] for r in runs.values()]
    assert sorted(h["job_type"] for h in headers) == sorted(
        ["ingest", "validate", "plan", "preprocess", "budget", "train", "train", "evaluate", "register", "report"])
    assert len({h["run_group"] for h in headers}) == 1 and headers[0]["run_group"].startswith("dvc-")
    head = run(["git", "rev-parse", "HEAD"], project).stdout.strip()
    for header in headers:
        config = header["config"]["update"]
        assert config["segflow"]["git_commit"] == head and config["segflow"]["data_hash"] != "unknown"
        assert config["train"]["lr"] == 0.003
        if header["job_type"] == "train":
            assert config["plan"]["patch_size"] == [32, 48, 32] and config["segflow"]["fold"] in (0, 1)

    artifacts = [(of_type(r, "run")[0]["job_type"], a) for r in runs.values() for a in of_type(r, "artifact")]
    logged = {(a["name"], a["digest"]) for job, a in artifacts if not a.get("use_after_commit")}
    used = [(job, a["name"], a["digest"]) for job, a in artifacts if a.get("use_after_commit")]
    # Each input resolves (same name and content digest) to an artifact an earlier stage logged.
    assert used and all((name, digest) in logged for _, name, digest in used)
    uses = {(job, name) for job, name, _ in used}
    assert {("train", "dataset-Hippocampus"), ("evaluate", "model-fold0"), ("evaluate", "model-fold1"),
            ("register", "evaluation"), ("register", "model-fold1")} <= uses
    (model,) = [a for job, a in artifacts if job == "register" and a["name"] == "model"]
    registration = json.loads((project / "artifacts/register/registration.json").read_text())
    assert {"champion", registration["model_id"]} <= set(model["aliases"])
    paths = {c["path"] for c in model["manifest"]["contents"]}
    assert {"model.pt", "bundle/models/model.ts", "bundle/models/model.onnx", "bundle/configs/metadata.json"} <= paths


def test_no_secret_reaches_any_log_config_or_artifact(reproduced):
    project, output = reproduced
    needles = [v.encode() for v in SECRETS.values()]
    assert not any(n in output.encode() for n in needles)
    scanned = 0
    for root in (project, project.parent / "wandb-e2e"):
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                data = path.read_bytes()
                assert not any(n in data for n in needles), f"a secret was written to {path}"
                scanned += 1
    assert scanned > 100


def test_second_repro_is_a_no_op_and_train_param_reruns_only_downstream(reproduced):
    project, _ = reproduced
    again = run([str(BIN / "dvc"), "repro"], project)
    assert stages_run(again.stdout) == []
    first = json.loads((project / "artifacts/register/registration.json").read_text())["model_id"]
    set_param(project, "train", "epochs", 1)  # a train param; one epoch keeps the rerun short
    changed = run([str(BIN / "dvc"), "repro"], project)
    assert stages_run(changed.stdout) == ["train@0", "train@1", "evaluate", "register", "report"]
    # The retrained model was challenged against the champion on the same out-of-fold cases.
    second = json.loads((project / "artifacts/register/registration.json").read_text())
    n_cases = json.loads((project / "artifacts/evaluate/metrics.json").read_text())["n_cases"]
    assert second["comparison"]["champion"] == first and second["comparison"]["n_paired"] == n_cases
    index = json.loads((dataset_registry(project) / "index.json").read_text())
    assert index["champion"] == (second["model_id"] if second["promoted"] else first)
    assert index["models"][second["model_id"]]["reason"] == second["reason"]


def test_adding_a_fold_trains_only_that_fold(reproduced):
    project, _ = reproduced
    set_param(project, "split", "folds", [0, 1, 2])
    added = run([str(BIN / "dvc"), "repro"], project)
    # split.folds is a budget param: the budget stage reruns (in a blink without a budget), its
    # decision is unchanged, so train@0 and train@1 do not
    assert stages_run(added.stdout) == ["budget", "train@2", "evaluate", "register", "report"]
    assert json.loads((project / "artifacts/evaluate/metrics.json").read_text())["folds"] == [0, 1, 2]


def test_predict_champion_writes_labels_with_input_geometry(reproduced, tmp_path):
    project, _ = reproduced
    inputs = tmp_path / "in"
    inputs.mkdir()
    for case in ("hippocampus_004", "hippocampus_118"):  # 118: image delivered without label
        (inputs / f"{case}.nii.gz").write_bytes((project / "data/Task04_Hippocampus/imagesTr" / f"{case}.nii.gz").read_bytes())
    done = run([str(BIN / "segflow"), "predict", "--model", "champion", "--input", str(inputs),
                "--output", str(tmp_path / "out")], project)
    assert len(done.stdout.split()) == 2
    for case in ("hippocampus_004", "hippocampus_118"):
        source, labels = nib.load(inputs / f"{case}.nii.gz"), nib.load(tmp_path / "out" / f"{case}.nii.gz")
        assert labels.shape == source.shape
        np.testing.assert_allclose(labels.affine, source.affine)
        assert set(np.unique(np.asarray(labels.dataobj))) <= {0, 1, 2}


def test_dataset_level_failure_stops_the_pipeline(tiny_project):
    set_param(tiny_project, "validate", "min_cases", 100)
    done = run([str(BIN / "dvc"), "repro"], tiny_project, check=False)
    assert done.returncode != 0
    assert "min_cases" in done.stderr and "Traceback" not in done.stderr
    assert stages_run(done.stdout) == ["ingest", "validate"]
    assert not (tiny_project / "artifacts/preprocessed").exists()
