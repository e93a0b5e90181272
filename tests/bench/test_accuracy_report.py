"""The accuracy benchmark's report functions on fabricated artifacts (no pipeline run)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench import accuracy
from bench.common import cpu_model, ram_gib


def fake_ci(values):
    """Deterministic stand-in for bootstrap_ci: mean of non-NaN values, low/high = min/max."""
    kept = [v for v in values if not math.isnan(v)]
    return {"mean": sum(kept) / len(kept), "low": min(kept), "high": max(kept), "n": len(kept)}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


PER_CASE = """\
case_id,fold,dice_anterior,dice_posterior,hd95_anterior,hd95_posterior,dice_anterior_raw,dice_posterior_raw
c1,0,0.9,0.8,1.0,2.0,0.1,0.1
c2,0,0.7,0.6,3.0,,0.1,0.1
c3,1,1.0,,1.0,1.0,0.1,0.1
"""


def fabricate_project(root: Path) -> Path:
    """A project folder with the artifacts evaluate/train/plan write, for two folds."""
    write(root / "params.yaml", "train: {epochs: 4, batch_size: auto, lr: 0.01}\n"
          "preprocess: {patch_size: auto}\nmodel: {name: UNet, channels: auto, strides: [2, 2], num_res_units: 1}\n"
          "split: {n_folds: 5, folds: [0, 1]}\nevaluate: {tta: true}\n")
    write(root / "artifacts/plan/plan.json", json.dumps(
        {"patch_size": [32, 48, 32], "batch_size": 4, "network_args": {"channels": [8, 16, 32]}}))
    write(root / "artifacts/evaluate/per_case.csv", PER_CASE)
    metrics = {"dice_mean": 0.8, "dice_mean_before_postprocessing": 0.79}
    write(root / "artifacts/evaluate/metrics.json", json.dumps(metrics))
    for fold, seconds in (("0", 30), ("1", 60)):
        folder = root / f"artifacts/train/fold_{fold}"
        write(folder / "history.csv", "epoch,train_loss,lr,seconds\n" +
              "".join(f"{e},1.0,0.01,{seconds}\n" for e in range(1, 5)))
        write(folder / "val_history.csv", "epoch,val_dice_mean,val_dice_anterior\n2,0.5,0.5\n4,0.9,0.9\n")
        write(folder / "summary.json", json.dumps({"epochs": 4, "seconds": 4 * seconds}))
    return root


def test_per_class_and_mean_dice_ignore_raw_columns_and_missing_values(tmp_path):
    rows = accuracy.read_csv_rows(write(tmp_path / "per_case.csv", PER_CASE))
    summary = accuracy.summarize_per_case(rows, ci=fake_ci)
    assert list(summary["classes"]) == ["anterior", "posterior"]
    assert summary["classes"]["anterior"]["mean"] == pytest.approx(0.8667, abs=1e-4)
    assert summary["classes"]["posterior"] == pytest.approx({"mean": 0.7, "low": 0.6, "high": 0.8, "n": 2})
    # per-case means over classes: 0.85, 0.65, 1.0 (c3's missing posterior is skipped)
    assert summary["dice_mean"]["mean"] == pytest.approx((0.85 + 0.65 + 1.0) / 3)
    assert summary["dice_mean"]["n"] == 3
    assert summary["dice_mean_per_fold"] == pytest.approx({"0": 0.75, "1": 1.0})
    assert summary["hd95_mean"] == pytest.approx((5 / 3 + 1.5) / 2)
    assert (summary["n_cases"], summary["folds"]) == (3, ["0", "1"])


def test_curve_joins_validation_epochs_with_cumulative_training_seconds():
    history = [{"epoch": str(e), "seconds": "30"} for e in (2, 1, 3, 4)]
    val = [{"epoch": "2", "val_dice_mean": "0.7"}, {"epoch": "4", "val_dice_mean": "0.9"},
           {"epoch": "9", "val_dice_mean": "0.95"}]
    curve = accuracy.training_curve(history, val)
    assert curve == [{"epoch": 2, "minutes": 1.0, "val_dice_mean": 0.7},
                     {"epoch": 4, "minutes": 2.0, "val_dice_mean": 0.9}]
    assert accuracy.first_reaching(curve, 0.89)["minutes"] == 2.0
    assert accuracy.first_reaching(curve, 0.95) is None


def test_overrides_go_through_segflows_override_code_and_bad_ones_are_one_line(tmp_path):
    import shutil

    import yaml
    from conftest import REPO

    shutil.copy2(REPO / "params.yaml", tmp_path / "params.yaml")
    accuracy.write_params(tmp_path, ["train.epochs=2", "preprocess.patch_size=[32,48,32]"])
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    assert params["train"]["epochs"] == 2 and params["preprocess"]["patch_size"] == [32, 48, 32]
    before = (tmp_path / "params.yaml").read_text()
    for bad in ("train.epoch=2", "train.epochs"):
        with pytest.raises(accuracy.BenchError, match="params.yaml"):
            accuracy.write_params(tmp_path, [bad])
    assert (tmp_path / "params.yaml").read_text() == before  # untouched by a rejected override


def test_stages_run_in_dag_order_whatever_order_dvc_lists_them():
    dot = ('"data.dvc" -> "ingest";\n"ingest" -> "plan";\n"plan" -> "train@0";\n'
           '"train@0" -> "evaluate";\n"ingest" -> "evaluate";')
    names = ["evaluate", "train@0", "plan", "ingest"]
    assert accuracy.order_stages(names, accuracy.dag_edges(dot)) == ["ingest", "plan", "train@0", "evaluate"]


@pytest.mark.parametrize(("dice", "minutes", "whole", "word"), [
    (0.90, 18.0, True, "met"), (0.90, 25.0, True, "not met"), (0.85, 10.0, True, "not met"),
    (0.90, 12.0, False, "undetermined"), (0.90, 21.0, False, "not met"), (0.85, None, False, "not met"),
])
def test_target_line_says_met_only_for_a_whole_pipeline_time(dice, minutes, whole, word):
    line = accuracy.target_verdict(dice, minutes, whole)["line"]
    assert line.startswith(f"target mean Dice >= 0.89 within 20 min: {word} (")


def test_report_on_fabricated_project_resolves_auto_and_writes_strict_json(tmp_path):
    pytest.importorskip("segflow.metrics.statistics")
    project = fabricate_project(tmp_path / "project")
    report = accuracy.build_report(project, None, None)
    assert report["settings"]["batch_size"] == 4 and report["settings"]["patch_size"] == [32, 48, 32]
    assert report["settings"]["network"]["channels"] == [8, 16, 32]
    assert report["curve"]["1"][-1] == {"epoch": 4, "minutes": 4.0, "val_dice_mean": 0.9}
    interval = report["accuracy"]["dice_mean"]
    assert interval["low"] <= interval["mean"] <= interval["high"]
    assert "of training" in report["target"]["line"]  # 6 min of training: no pipeline time measured
    text = accuracy.format_report(report)
    assert "posterior" in text and "fold 1" in text and report["target"]["line"] in text
    out = tmp_path / "results" / "accuracy.json"
    accuracy.write_json(out, {**report, "odd": math.nan})
    assert json.loads(out.read_text())["odd"] is None
    assert [p.name for p in out.parent.iterdir()] == ["accuracy.json"]  # no temporary left behind


def test_failure_cause_is_the_error_line_not_dvcs_wrapper(tmp_path):
    log = write(tmp_path / "preprocess.log", "Traceback (most recent call last):\n  File x\n"
                "AttributeError: 'Volume' object has no attribute 'spacing'\n"
                "ERROR: failed to reproduce 'preprocess': failed to run: segflow stage preprocess, exited with 1\n\n")
    assert accuracy.failure_cause(log) == "AttributeError: 'Volume' object has no attribute 'spacing'"
    assert accuracy.failure_cause(write(tmp_path / "empty.log", "")) == "(no output)"


def test_machine_info_parses_proc_text():
    assert cpu_model("processor\t: 0\nmodel name\t: AMD EPYC 7B13\n") == "AMD EPYC 7B13"
    assert ram_gib("MemTotal:       25165824 kB\n") == 24.0


def test_a_budgeted_run_reports_its_decision_beside_the_measured_minutes(tmp_path):
    project = fabricate_project(tmp_path)
    write(project / "artifacts/plan/training.json", json.dumps({"budget": {
        "budget": "5m", "budget_minutes": 5.0, "epochs": 4, "folds": [0, 1], "configurations": ["3d", "2d"],
        "predicted_total_minutes": 7.0}}))
    write(project / "artifacts/train/fold_0/configurations/2d/summary.json", json.dumps({"seconds": 60}))
    write(project / "artifacts/evaluate/configuration.json", json.dumps({"selected": "3d"}))
    budget = accuracy.budget_summary(project / "artifacts")
    # fold 0: 120 s + its 2d 60 s; fold 1: 240 s -> 7.0 min measured
    assert budget["measured_training_minutes"] == 7.0 and budget["prediction_error"] == 0.0
    assert budget["selection"] == {"selected": "3d"} and budget["configurations"] == ["3d", "2d"]
    report = accuracy.build_report(project, None, 600.0)
    row = accuracy.sweep_row(report)
    assert row["budget"] == "5m" and row["pipeline_minutes"] == 10.0
    assert set(row["classes"]) == {"anterior", "posterior"}  # per class: ISBI's membrane F-score
    sweep = {"created": "now", "machine": {"cpu": "test cpu"}, "rows": [row]}
    assert "5m | 4 | ['3d', '2d'] | 3d | " in accuracy.format_sweep(sweep)
    assert "anterior 0." in accuracy.format_sweep(sweep)
    accuracy.plot_sweep(sweep, tmp_path / "sweep.png")
    assert (tmp_path / "sweep.png").stat().st_size > 0


def test_a_run_without_a_budget_reports_none(tmp_path):
    assert accuracy.budget_summary(fabricate_project(tmp_path) / "artifacts") is None
