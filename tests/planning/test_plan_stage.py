"""The plan stage: reads what ingest and validate wrote, writes fingerprint.json and plan.json,
says why for each choice and reports a summary."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import save_nifti, synthetic_case
from planning_fixtures import repo_params

from segflow.config import ConfigError
from segflow.data.splits import Splits
from segflow.files import read_json
from segflow.paths import Paths
from segflow.planning.plan import Plan
from segflow.stages import plan as plan_stage

CASE_IDS = ["case_0", "case_1", "case_2", "case_bad"]


class RecordingTracker:
    def __init__(self):
        self.summaries = []

    def summary(self, metrics):
        self.summaries.append(dict(metrics))


def write_upstream_outputs(paths: Paths, data_root: str) -> None:
    """What ingest (manifest, splits) and validate (kept cases) leave for the plan stage."""
    rows = []
    for seed, case_id in enumerate(CASE_IDS):
        image, label = synthetic_case(seed, shape=(36, 48, 36))
        save_nifti(paths.root / data_root / "imagesTr" / f"{case_id}.nii.gz", image)
        save_nifti(paths.root / data_root / "labelsTr" / f"{case_id}.nii.gz", label)
        rows.append({"case_id": case_id, "image": f"imagesTr/{case_id}.nii.gz", "label": f"labelsTr/{case_id}.nii.gz"})
    paths.manifest.parent.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(paths.manifest, index=False)
    Splits(n_folds=2, seed=0, dataset="Tiny", labels={"0": "background", "1": "Anterior", "2": "Posterior"},
           label_values=[0, 1, 2], modality={"0": "MRI"}, folds={c: i % 2 for i, c in enumerate(CASE_IDS)}
           ).save(paths.splits)
    paths.validation_report.parent.mkdir(parents=True)
    paths.validation_report.write_text(json.dumps({"passed": True, "n_kept": 3, "n_quarantined": 0,
                                                   "kept": CASE_IDS[:3], "quarantined": {}, "decision": {}}))


def test_plan_stage_writes_fingerprint_and_plan_and_explains_each_choice(tmp_path, capsys):
    paths = Paths(tmp_path)
    write_upstream_outputs(paths, "data/tiny")
    params = repo_params({"data": {"root": "data/tiny"}, "train": {"device": "cpu"}})
    tracker = RecordingTracker()

    summary = plan_stage.main(params, paths, tracker)

    fingerprint = read_json(paths.fingerprint)
    assert fingerprint["case_ids"] == CASE_IDS[:3]  # only what validate kept
    plan = Plan.load(paths.plan)
    assert plan.patch_size == [40, 48, 40]
    assert summary == {"patch_size": plan.patch_size, "batch_size": 4, "device": "cpu",
                       "estimated_memory_gb": plan.estimated_memory_gb, "target_spacing": [1.0, 1.0, 1.0]}
    assert tracker.summaries == [{f"plan/{key}": value for key, value in summary.items()}]
    printed = capsys.readouterr().out
    for key, reason in plan.reasons.items():
        assert f"plan {key}" in printed and reason in printed


@pytest.mark.parametrize(("overrides", "named"), [
    ({"preprocess": {"target_spacing": [0.001, 0.001, 0.001]}}, "preprocess.target_spacing"),  # a unit slip
    ({"model": {"out_channels": 2}}, "model.out_channels"),  # splits.json declares 3 classes
])
def test_plan_stage_refuses_a_plan_it_cannot_honour_and_writes_no_plan(tmp_path, overrides, named):
    paths = Paths(tmp_path)
    write_upstream_outputs(paths, "data/tiny")
    params = repo_params({"data": {"root": "data/tiny"}, "train": {"device": "cpu"}, **overrides})

    with pytest.raises(ConfigError, match=named):
        plan_stage.main(params, paths)

    assert not paths.plan.exists()
