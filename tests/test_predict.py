"""`segflow predict`'s code path on a model file: one label file per input, on the input's grid."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, save_nifti
from segflow.models.bundle import ModelBundle, save_bundle
from segflow.models.factory import build_network
from segflow.predict import load_predictor, predict_paths

NET_ARGS = dict(spatial_dims=3, in_channels=1, out_channels=3, channels=[4, 8], strides=[2], num_res_units=1)


@pytest.fixture
def project(tmp_path) -> Path:
    shutil.copy2(REPO / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "dvc.yaml").write_text("")
    torch.manual_seed(0)
    bundle = ModelBundle(network="UNet", network_args=NET_ARGS, patch_size=[16, 16, 16],
                         labels={"0": "background", "1": "a", "2": "b"},
                         state_dicts=[build_network("UNet", NET_ARGS).state_dict()])
    save_bundle(tmp_path / "model.pt", bundle)
    rng = np.random.default_rng(0)
    for name, shape in (("case_001", (20, 14, 9)), ("case_002", (9, 11, 13))):
        save_nifti(tmp_path / "in" / f"{name}.nii.gz", rng.normal(size=shape).astype(np.float32), spacing=(1.0, 1.5, 2.0))
    return tmp_path


@pytest.mark.parametrize("tta", [True, False])
def test_each_input_gets_a_uint8_label_file_with_its_geometry(project, tta):
    import nibabel as nib

    written = list(predict_paths(project, str(project / "model.pt"), project / "in", project / "out", tta=tta))
    assert [p.name for p in written] == ["case_001.nii.gz", "case_002.nii.gz"]
    for dest in written:
        source, labels = nib.load(str(project / "in" / dest.name)), nib.load(str(dest))
        assert labels.shape == source.shape
        np.testing.assert_allclose(labels.affine, source.affine)
        assert labels.get_data_dtype() == np.uint8
        assert set(np.unique(np.asarray(labels.dataobj))) <= {0, 1, 2}


def test_load_predictor_gives_the_bundle_and_eval_networks(project):
    bundle, nets = load_predictor(project, str(project / "model.pt"))
    assert bundle.patch_size == [16, 16, 16]
    assert len(nets) == 1 and not nets[0].training
