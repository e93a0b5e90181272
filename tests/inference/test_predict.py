"""`segflow predict`'s code path on a model file: one label file per input, on the input's grid."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, save_nifti

from segflow.data.preprocess import load_case, prepare_image
from segflow.inference.predict import PredictOptions, load_predictor, predict_files, read_input
from segflow.models.factory import build_network
from segflow.models.model_file import ModelFile, save_model_file

NET_ARGS = dict(spatial_dims=3, in_channels=1, out_channels=3, channels=[4, 8], strides=[2], num_res_units=1)


@pytest.fixture
def project(tmp_path) -> Path:
    shutil.copy2(REPO / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "dvc.yaml").write_text("")
    torch.manual_seed(0)
    bundle = ModelFile(network="UNet", network_args=NET_ARGS, patch_size=[16, 16, 16],
                         labels={"0": "background", "1": "a", "2": "b"},
                         state_dicts=[build_network("UNet", NET_ARGS).state_dict()])
    save_model_file(tmp_path / "model.pt", bundle)
    rng = np.random.default_rng(0)
    for name, shape in (("case_001", (20, 14, 9)), ("case_002", (9, 11, 13))):
        save_nifti(tmp_path / "in" / f"{name}.nii.gz", rng.normal(size=shape).astype(np.float32), spacing=(1.0, 1.5, 2.0))
    return tmp_path


@pytest.mark.parametrize("tta", [True, False])
def test_each_input_gets_a_uint8_label_file_with_its_geometry(project, tta):
    import nibabel as nib

    outcomes = list(predict_files(str(project / "model.pt"), project / "in", project / "out", PredictOptions(tta=tta)))
    written = [o.dest for o in outcomes]
    assert [p.name for p in written] == ["case_001.nii.gz", "case_002.nii.gz"]
    for dest in written:
        source, labels = nib.load(str(project / "in" / dest.name)), nib.load(str(dest))
        assert labels.shape == source.shape
        np.testing.assert_allclose(labels.affine, source.affine)
        assert labels.get_data_dtype() == np.uint8
        assert set(np.unique(np.asarray(labels.dataobj))) <= {0, 1, 2}


def test_load_predictor_gives_the_bundle_and_eval_networks(project):
    predictor = load_predictor(project / "model.pt")
    assert predictor.bundle.patch_size == [16, 16, 16]
    assert len(predictor.nets) == 1 and not predictor.nets[0].training


CT_PLAN = {"target_spacing": [1.0, 1.0, 1.0],
           "normalisation": [{"scheme": "ct", "clip": [-1.0, 1.5], "mean": 0.1, "std": 0.9}]}
ZSCORE_PLAN = {"target_spacing": [1.0, 1.5, 2.0], "normalisation": [{"scheme": "zscore"}]}


@pytest.mark.parametrize("plan", [None, CT_PLAN, ZSCORE_PLAN], ids=["no-plan", "ct-resampled", "zscore-as-is"])
def test_predict_prepares_an_input_exactly_as_load_case(project, plan):
    """predict reads (and checks) the image itself, then prepares it through the same
    prepare_image: the network must see what training's load_case gives, bit for bit."""
    path = project / "in" / "case_001.nii.gz"
    expected = load_case(path, preprocessing=plan)
    raw = read_input(path)
    actual = prepare_image(raw.image, raw.affine, raw.spacing, plan)
    np.testing.assert_array_equal(actual.image, expected.image)
    assert actual.original_shape == expected.original_shape and actual.spacing == expected.spacing
    np.testing.assert_array_equal(actual.affine, expected.affine)


SLICE_ARGS = dict(NET_ARGS, slice_axis=0)


def test_a_configuration_ensemble_predicts_the_mean_of_its_configurations(project):
    """A 3d model with a 2d slice-wise companion (planning.configurations): predict averages the two
    configurations' probabilities, each from its own windows."""
    from segflow.inference.sliding_window import predict_probabilities, to_labels
    from segflow.models.model_file import load_model_file, with_companions

    torch.manual_seed(1)
    own = load_model_file(project / "model.pt")
    companion = ModelFile(network="UNet", network_args=SLICE_ARGS, patch_size=[1, 16, 16], labels=own.labels,
                          state_dicts=[build_network("UNet", SLICE_ARGS).state_dict()])
    save_model_file(project / "ensemble.pt", with_companions(own, [companion]))
    predictor = load_predictor(project / "ensemble.pt")
    assert [b.patch_size for b, _ in predictor.groups()] == [[16, 16, 16], [1, 16, 16]]

    outcomes = list(predict_files(str(project / "ensemble.pt"), project / "in", project / "out",
                                  PredictOptions(tta=False)))
    import nibabel as nib

    raw = read_input(project / "in" / "case_001.nii.gz")
    image = prepare_image(raw.image, raw.affine, raw.spacing, None).image
    mean = sum(predict_probabilities(nets, image, bundle.patch_size) for bundle, nets in predictor.groups()) / 2
    written = np.asarray(nib.load(str(outcomes[0].dest)).dataobj)
    np.testing.assert_array_equal(written, to_labels(mean))
