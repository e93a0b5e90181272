"""Bring your own dataset, end to end: an nnU-Net v2 raw dataset (two channels, T2 beside a CT in
Hounsfield units, NRRD files, anisotropic with two slice spacings, an ignore label and nnU-Net's
splits_final.json) goes through real `dvc repro` with `data.layout`, `model.in_channels` and
`model.out_channels` left `auto`, and `segflow predict` labels its imagesTs/ folder as it comes,
writing NRRD on each input's grid."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import yaml
from conftest import BIN, REPO, TINY_PARAMS, make_tiny_project, merge, run, write_nnunet_v2_dataset

pytestmark = [pytest.mark.slow, pytest.mark.integration]

V2_PARAMS = {
    "data": {"root": "data/Dataset042_TinyTwoChannel", "local_copy": None, "url": None, "md5": None},
    "preprocess": {"patch_size": "auto"},
    "train": {"epochs": 1, "val_every": 1},
    "register": {"export": []},  # exports are tested on the MSD project
}


@pytest.fixture(scope="module")
def v2_project(tmp_path_factory):
    """The tiny project with its data swapped for an nnU-Net v2 dataset, run through dvc repro."""
    project = tmp_path_factory.mktemp("v2") / "project"
    project.mkdir()
    make_tiny_project(project)
    shutil.rmtree(project / "data")
    params = merge(yaml.safe_load((REPO / "params.yaml").read_text()), merge(TINY_PARAMS, V2_PARAMS))
    assert params["data"]["layout"] == "auto" and params["model"]["in_channels"] == "auto"
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    cases = write_nnunet_v2_dataset(project / V2_PARAMS["data"]["root"])
    run([str(BIN / "dvc"), "repro", "register"], project)  # the results page is tested on the MSD project
    return project, cases


def read_json(project, rel):
    return json.loads((project / rel).read_text())


def test_the_layout_channels_classes_and_folds_come_from_the_dataset(v2_project):
    project, cases = v2_project
    splits = read_json(project, "artifacts/ingest/splits.json")
    assert splits["layout"] == "nnunetv2" and splits["folds_from"] == "splits_final.json"
    assert splits["n_folds"] == 3 and {c: f for c, f in splits["folds"].items()} == {c: i % 3 for i, c in
                                                                                        enumerate(cases)}
    assert splits["ignore_label"] == 3 and splits["labels"] == {"0": "background", "1": "anterior",
                                                                "2": "posterior"}
    plan = read_json(project, "artifacts/plan/plan.json")
    assert (plan["network_args"]["in_channels"], plan["network_args"]["out_channels"]) == (2, 3)
    assert [n["scheme"] for n in plan["normalisation"]] == ["zscore", "ct"]  # T2 per case, CT in HU
    # nnU-Net's rule for a very coarse axis: its 10th percentile spacing, not the median
    assert plan["target_spacing"] == [0.8, 0.8, 2.0]


def test_every_case_is_kept_and_resampled_where_its_spacing_differs(v2_project):
    project, cases = v2_project
    report = read_json(project, "artifacts/validate/report.json")
    assert report["n_kept"] == len(cases) and report["n_quarantined"] == 0
    index = read_json(project, "artifacts/preprocessed/index.json")["cases"]
    assert index["tiny_000"]["shape"] == [32, 40, 16]  # 2.0 mm slices: as stored
    assert index["tiny_001"]["shape"] == [32, 40, 20]  # 2.5 mm slices: resampled to 2.0 mm
    assert np.load(project / "artifacts/preprocessed/tiny_001.image.npy", mmap_mode="r").shape == (2, 32, 40, 20)


def test_evaluation_scores_the_classes_without_the_ignore_label(v2_project):
    project, _ = v2_project
    metrics = read_json(project, "artifacts/evaluate/metrics.json")
    assert {"dice_anterior", "dice_posterior"} <= set(metrics) and "dice_ignore" not in metrics


def test_predict_labels_images_ts_in_the_inputs_format_and_grid(v2_project):
    """No --input: the dataset's imagesTs/ as nnU-Net lays it out, into artifacts/predictions/imagesTs."""
    project, _ = v2_project
    source, out = project / V2_PARAMS["data"]["root"] / "imagesTs", project / "artifacts/predictions/imagesTs"
    run([str(BIN / "segflow"), "predict", "--model", "champion", "--no-tta"], project)
    written = sorted(p.name for p in out.iterdir())
    assert written == ["test_000.nrrd", "test_001.nrrd"]
    for name in written:
        label = sitk.ReadImage(str(out / name))
        image = sitk.ReadImage(str(source / name.replace(".nrrd", "_0000.nrrd")))
        assert label.GetSize() == image.GetSize()
        assert np.allclose(label.GetSpacing(), image.GetSpacing()) and np.allclose(label.GetOrigin(), image.GetOrigin())
        assert np.allclose(label.GetDirection(), image.GetDirection())
        assert set(np.unique(sitk.GetArrayFromImage(label))) <= {0, 1, 2}
