"""Sliding-window inference: any image size in, a label map of the same size out; CPU where no GPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segflow.inference import pick_device, predict_labels, predict_logits
from segflow.models.factory import build_network

NET_ARGS = dict(spatial_dims=3, in_channels=1, out_channels=3, channels=[4, 8], strides=[2], num_res_units=1)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return build_network("UNet", NET_ARGS).eval()


@pytest.mark.parametrize("shape", [(1, 10, 12, 7), (1, 33, 20, 17)])
def test_labels_have_the_image_shape_even_smaller_than_the_patch(net, shape):
    image = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    labels = predict_labels(net, image, [16, 16, 16])
    assert labels.shape == shape[1:]
    assert labels.dtype == np.uint8
    assert set(np.unique(labels)) <= {0, 1, 2}


def test_logits_have_one_channel_per_class(net):
    image = np.zeros((1, 10, 12, 7), np.float32)
    assert predict_logits(net, image, [16, 16, 16]).shape == (3, 10, 12, 7)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU fallback")
def test_pick_device_falls_back_to_cpu_without_cuda():
    assert pick_device() == torch.device("cpu")


def test_pick_device_honours_cpu_request():
    assert pick_device("cpu") == torch.device("cpu")


def test_mirror_sets_cover_every_axis_combination_identity_first():
    from segflow.inference import mirror_sets

    sets = mirror_sets(3)
    assert sets[0] == () and len(sets) == 8 and len(set(sets)) == 8


def test_tta_of_a_mirror_symmetric_network_equals_plain_prediction():
    """An identity-like network is flip-equivariant, so averaging over mirrors changes nothing."""
    import torch

    from segflow.inference import predict_probabilities

    net = torch.nn.Conv3d(1, 3, kernel_size=1)
    image = torch.randn(1, 12, 10, 8)
    plain = predict_probabilities(net, image, [8, 8, 8], tta=False)
    mirrored = predict_probabilities(net, image, [8, 8, 8], tta=True)
    assert plain.shape == (3, 12, 10, 8)
    torch.testing.assert_close(plain, mirrored, atol=1e-5, rtol=1e-5)
