"""build_network: MONAI networks by name from params.yaml, arguments checked with a clear ValueError."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from segflow.config import load_params
from segflow.models.factory import NETWORKS, build_network, network_class

REPO_PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


@pytest.fixture(scope="module")
def model_cfg():
    return load_params(REPO_PARAMS).model


def test_repo_unet_builds_and_keeps_patch_shape(model_cfg):
    # The repo leaves channels, depth and width to the plan; these are its values for Hippocampus on CPU.
    args = model_cfg.network_args()
    assert {k for k, v in args.items() if v == "auto"} == {"channels", "strides", "in_channels", "out_channels"}
    args.update(channels=[16, 32, 64, 128], strides=[2, 2, 2], in_channels=1, out_channels=3)
    torch.manual_seed(0)
    net = build_network(model_cfg.name, args).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 1, 40, 56, 40))
    assert type(net).__name__ == "UNet"
    assert out.shape == (1, 3, 40, 56, 40)


def test_2d_unet_builds_and_runs():
    net = build_network("UNet", dict(spatial_dims=2, in_channels=1, out_channels=2, channels=[4, 8], strides=[2]))
    with torch.no_grad():
        assert net.eval()(torch.randn(1, 1, 32, 48)).shape == (1, 2, 32, 48)


def test_unknown_network_name_is_named_with_choices():
    with pytest.raises(ValueError, match="'UNet3000'") as caught:
        build_network("UNet3000", {})
    assert "UNet" in str(caught.value) and "SegResNet" in str(caught.value)


def test_unknown_argument_is_named(model_cfg):
    args = {**model_cfg.network_args(), "chanels": [8, 16]}
    with pytest.raises(ValueError, match="chanels"):
        build_network("UNet", args)


def test_missing_argument_is_named(model_cfg):
    args = {k: v for k, v in model_cfg.network_args().items() if k != "strides"}
    with pytest.raises(ValueError, match="needs argument.*strides"):
        build_network("UNet", args)


def test_arguments_monai_rejects_become_value_error():
    args = dict(spatial_dims=3, in_channels=1, out_channels=3, channels=[8, 16, 32], strides=[2])
    with pytest.raises(ValueError, match="UNet"):
        build_network("UNet", args)


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_every_registered_name_resolves_to_its_monai_class(name):
    assert network_class(name).__name__ == name
