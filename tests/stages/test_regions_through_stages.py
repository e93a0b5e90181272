"""Region-based labels (nnU-Net's `"whole": [1, 2]` with `regions_class_order`) end to end through
the real stages, in process: one sigmoid output per region, Dice per region, and a label map
painted in the regions' order by evaluate and `segflow predict`."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, TINY_PARAMS, merge, write_nnunet_v2_dataset

from segflow.data.regions import Regions
from segflow.stages import run_stage

pytestmark = pytest.mark.slow  # every stage on a tiny dataset, about 30 s

REGION_LABELS = {"background": 0, "whole": [1, 2], "posterior": [2], "ignore": 3}


@pytest.fixture(scope="module")
def project(tmp_path_factory, project_env):
    root = tmp_path_factory.mktemp("regions")
    for name in ("params.yaml", "dvc.yaml"):
        shutil.copy2(REPO / name, root / name)
    params = merge(yaml.safe_load((root / "params.yaml").read_text()), merge(TINY_PARAMS, {
        "data": {"root": "data/Dataset009_Regions", "local_copy": None, "url": None, "md5": None},
        "preprocess": {"patch_size": [32, 40, 16], "num_workers": 1},
        "train": {"epochs": 2, "val_every": 1}, "register": {"export": []}}))
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    write_nnunet_v2_dataset(root / "data/Dataset009_Regions", n_cases=8, ending=".nii.gz", n_test=1,
                            labels=REGION_LABELS, regions_class_order=[1, 2])
    for stage in ("ingest", "validate", "plan", "preprocess", "budget"):
        run_stage(stage, root)
    run_stage("train", root, fold=0)
    run_stage("evaluate", root)
    return root


def test_the_network_has_one_sigmoid_output_per_region(project):
    splits = json.loads((project / "artifacts/ingest/splits.json").read_text())
    assert splits["regions"] == {"names": ["whole", "posterior"], "values": [[1, 2], [2]], "class_order": [1, 2]}
    assert splits["labels"] == {"0": "background", "1": "whole", "2": "posterior"}
    plan = json.loads((project / "artifacts/plan/plan.json").read_text())
    assert plan["network_args"]["out_channels"] == 2


def test_evaluation_scores_each_region(project):
    metrics = json.loads((project / "artifacts/evaluate/metrics.json").read_text())
    assert {"dice_whole", "dice_posterior"} <= set(metrics) and 0.0 <= metrics["dice_whole"] <= 1.0
    assert json.loads((project / "artifacts/evaluate/postprocessing.json").read_text())["keep_largest_component"] == []


def test_evaluate_draws_the_worst_case_and_report_builds_the_page_before_any_registration(project):
    from segflow.paths import Paths
    from segflow.reporting.overlays import OverlayIndex

    paths = Paths(project)
    index = OverlayIndex.load(paths.overlay_index)
    scores = pd.read_csv(paths.per_case).set_index("case_id")[["dice_whole", "dice_posterior"]].mean(axis=1)
    assert [c.case_id for c in index.worst] == [str(scores.idxmin())]  # TINY_PARAMS: one overlay case
    assert all((paths.overlays / c.file).is_file() for c in index.worst + index.best)
    run_stage("report", project)
    page = paths.report_page.read_text()
    assert "<td>whole</td>" in page and "<td>posterior</td>" in page and "No model card" in page
    assert all((paths.report_dir / "overlays" / c.file).is_file() for c in index.worst + index.best)


def test_predict_paints_the_regions_into_a_label_map(project, tmp_path):
    from segflow.inference.predict import PredictOptions, predict_files

    source = project / "data/Dataset009_Regions/imagesTs"
    outcomes = list(predict_files(str(project / "artifacts/train/fold_0/model.pt"), source, tmp_path / "out",
                                  PredictOptions(tta=False), log=lambda _: None))
    assert [o.dest.name for o in outcomes] == ["test_000.nii.gz"]
    import nibabel as nib

    assert set(np.unique(np.asarray(nib.load(outcomes[0].dest).dataobj))) <= {0, 1, 2}


def test_regions_paint_in_their_class_order():
    regions = Regions(("whole", "core"), ((1, 2), (2,)), (1, 2))
    probabilities = np.array([[[0.9, 0.9, 0.1]], [[0.2, 0.8, 0.9]]])  # (R=2, 1, 3)
    assert regions.to_label_map(probabilities).tolist() == [[1, 2, 2]]  # a later region wins
    assert regions.masks(np.array([0, 1, 2])).tolist() == [[False, True, True], [False, False, True]]
