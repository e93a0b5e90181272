"""`segflow predict` applies the postprocessing recorded in the model file, and `--no-postprocess`
gives the network's own labels."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import torch
from conftest import save_nifti
from typer.testing import CliRunner

from segflow.cli import app
from segflow.inference.postprocessing import keep_largest_component
from segflow.models.factory import build_network
from segflow.models.model_file import ModelFile, save_model_file

NET_ARGS = dict(spatial_dims=3, in_channels=1, out_channels=3, channels=[4, 8], strides=[2], num_res_units=1)


def labels_of(tmp_path, *flags: str) -> np.ndarray:
    out = tmp_path / ("raw" if flags else "cleaned")
    result = CliRunner().invoke(app, ["predict", "--model", str(tmp_path / "model.pt"), "--no-tta", "-i",
                                      str(tmp_path / "in"), "-o", str(out), *flags])
    assert result.exit_code == 0, result.output
    return np.asarray(nib.load(out / "case.nii.gz").dataobj)


def test_no_postprocess_skips_the_recorded_cleaning(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    bundle = ModelFile(network="UNet", network_args=NET_ARGS, patch_size=[16, 16, 16],
                       labels={"0": "background", "1": "a", "2": "b"},
                       state_dicts=[build_network("UNet", NET_ARGS).state_dict()],
                       postprocessing={"keep_largest_component": [1, 2]})
    save_model_file(tmp_path / "model.pt", bundle)
    save_nifti(tmp_path / "in" / "case.nii.gz", np.random.default_rng(0).normal(100, 20, (20, 18, 16)).astype(np.float32))
    raw, cleaned = labels_of(tmp_path, "--no-postprocess"), labels_of(tmp_path)
    assert np.array_equal(cleaned, keep_largest_component(raw, [1, 2]))
    assert not np.array_equal(raw, cleaned)  # the random network's labels are fragmented: cleaning shows
