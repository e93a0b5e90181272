"""Model bundle: a saved model loads back into the same network; anything else is refused clearly."""

from __future__ import annotations

import os

import pytest
import torch

from segflow.models.bundle import ModelBundle, load_bundle, save_bundle
from segflow.models.factory import build_network

ARGS = dict(spatial_dims=3, in_channels=1, out_channels=3, channels=[4, 8], strides=[2], num_res_units=1)


@pytest.fixture
def bundle() -> ModelBundle:
    torch.manual_seed(0)
    net = build_network("UNet", ARGS)
    return ModelBundle(network="UNet", network_args=ARGS, patch_size=[16, 16, 16],
                       labels={"0": "background", "1": "Anterior", "2": "Posterior"},
                       state_dict=net.state_dict(), info={"epochs": 3})


def test_round_trip_builds_a_network_with_the_same_outputs(tmp_path, bundle):
    path = tmp_path / "model.pt"
    save_bundle(path, bundle)
    loaded = load_bundle(path)

    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        expected = bundle.build()(x)
        actual = loaded.build()(x)
    assert torch.equal(expected, actual)
    assert loaded.patch_size == [16, 16, 16]
    assert loaded.labels == bundle.labels and loaded.info == {"epochs": 3}
    assert not loaded.build().training
    assert os.listdir(tmp_path) == ["model.pt"], "temporary file left beside the model"


def test_plain_torch_dict_is_refused_naming_the_path(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    with pytest.raises(ValueError, match="weights.pt.*not a segflow model"):
        load_bundle(path)


def test_random_bytes_are_refused_naming_the_path(tmp_path):
    path = tmp_path / "garbage.pt"
    path.write_bytes(os.urandom(256))
    with pytest.raises(ValueError, match="garbage.pt.*not a readable segflow model"):
        load_bundle(path)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        load_bundle(tmp_path / "nowhere.pt")
