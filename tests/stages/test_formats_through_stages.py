"""The same two-channel nnU-Net v2 dataset in each 3D format reaches the training cache through
the real ingest, validate, plan and preprocess stages (in process; the full `dvc repro` with NRRD
is tests/integration/test_pipeline_nnunet_v2.py), and every format gives the same cache."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml
from conftest import REPO, write_nnunet_v2_dataset

from segflow.stages import run_stage

pytestmark = pytest.mark.slow  # four stages per format, about 10 s

FORMATS = [".nii.gz", ".mha", ".nrrd"]


@pytest.fixture(scope="module")
def cached(tmp_path_factory, project_env):
    """format -> a project run to the preprocessed cache on that format's copy of the dataset."""
    projects = {}
    for ending in FORMATS:
        root = tmp_path_factory.mktemp("formats") / ending.strip(".").replace(".", "_")
        root.mkdir()
        for name in ("params.yaml", "dvc.yaml"):
            shutil.copy2(REPO / name, root / name)
        params = yaml.safe_load((root / "params.yaml").read_text())
        params["data"].update({"root": "data/Dataset007_Formats", "local_copy": None, "url": None, "md5": None})
        params["validate"]["min_cases"] = 4
        params["preprocess"]["num_workers"] = 1
        params["augment"]["preview_samples"] = 1
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        write_nnunet_v2_dataset(root / "data/Dataset007_Formats", n_cases=6, ending=ending, n_test=0)
        for stage in ("ingest", "validate", "plan", "preprocess"):
            run_stage(stage, root)
        projects[ending] = root
    return projects


@pytest.mark.parametrize("ending", FORMATS)
def test_each_format_is_read_planned_and_cached_with_both_channels(cached, ending):
    root = cached[ending]
    plan = json.loads((root / "artifacts/plan/plan.json").read_text())
    assert (plan["network_args"]["in_channels"], plan["network_args"]["out_channels"]) == (2, 3)
    assert json.loads((root / "artifacts/validate/report.json").read_text())["n_kept"] == 6
    assert np.load(root / "artifacts/preprocessed/tiny_001.image.npy").shape[0] == 2


def test_every_format_gives_the_same_cache(cached):
    first, *others = [cached[ending] / "artifacts/preprocessed" for ending in FORMATS]
    for other in others:
        for name in ("tiny_000.image.npy", "tiny_001.label.npy", "tiny_002.image.npy"):
            assert np.array_equal(np.load(first / name), np.load(other / name)), (other, name)
