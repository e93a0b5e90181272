"""2D end to end: the ISBI 2012 membrane set ingests, validates, trains (albumentations) and
evaluates through real `dvc repro` with tiny params; predict writes PNG masks in raw values."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from conftest import BIN, make_tiny_project, run

pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.fixture(scope="module")
def isbi_project(tmp_path_factory):
    project = tmp_path_factory.mktemp("isbi") / "project"
    project.mkdir()
    make_tiny_project(project, two_d=True)
    run([str(BIN / "dvc"), "repro", "register"], project)  # the results page is tested on the MSD project
    return project


def test_isbi_validates_trains_and_evaluates_in_2d(isbi_project):
    report = json.loads((isbi_project / "artifacts/validate/report.json").read_text())
    assert report["n_kept"] == 8 and report["n_quarantined"] == 0
    metrics = json.loads((isbi_project / "artifacts/evaluate/metrics.json").read_text())
    assert metrics["n_cases"] == 2 and 0.0 <= metrics["dice_membrane"] <= 1.0
    assert (isbi_project / "artifacts/preprocess/preview.png").is_file()


def test_predict_writes_png_masks_with_the_deliverys_raw_values(isbi_project, tmp_path):
    image = isbi_project / "data/isbi2012-membrane/train/image/0.png"
    run([str(BIN / "segflow"), "predict", "--model", "champion", "--input", str(image),
         "--output", str(tmp_path), "--no-tta"], isbi_project)
    mask = cv2.imread(str(tmp_path / "0.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == cv2.imread(str(image), cv2.IMREAD_UNCHANGED).shape
    assert set(np.unique(mask)) <= {0, 255}
