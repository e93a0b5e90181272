"""Sliding-window inference: any image size in, a label map of the same size out; CPU where no GPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import assert_same_labels_where_decided, assert_same_up_to_float32_order

from segflow.inference.sliding_window import pick_device, predict_labels, predict_logits
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
    from segflow.inference.sliding_window import mirror_sets

    sets = mirror_sets(3)
    assert sets[0] == () and len(sets) == 8 and len(set(sets)) == 8


def test_tta_of_a_mirror_symmetric_network_equals_plain_prediction():
    """An identity-like network is flip-equivariant, so averaging over mirrors changes nothing."""
    import torch

    from segflow.inference.sliding_window import predict_probabilities

    net = torch.nn.Conv3d(1, 3, kernel_size=1)
    image = torch.randn(1, 12, 10, 8)
    plain = predict_probabilities(net, image, [8, 8, 8], tta=False)
    mirrored = predict_probabilities(net, image, [8, 8, 8], tta=True)
    assert plain.shape == (3, 12, 10, 8)
    assert_same_up_to_float32_order(mirrored, plain)


def test_mirrors_batched_together_give_the_probabilities_of_one_mirror_per_pass(net):
    """Batching the TTA mirrors (speed) must not change what is predicted."""
    from segflow.inference.sliding_window import predict_probabilities

    image = np.random.default_rng(1).normal(size=(1, 12, 14, 10)).astype(np.float32)
    one_per_pass = predict_probabilities(net, image, [16, 16, 16], tta=True, sw_batch_size=1)
    batched = predict_probabilities(net, image, [16, 16, 16], tta=True, sw_batch_size=8)
    assert_same_labels_where_decided(batched, one_per_pass)


@pytest.mark.parametrize("shape,patch,overlap", [((10, 12, 7), (16, 16, 16), 0.5), ((33, 20, 17), (16, 16, 16), 0.5),
                                                 ((40, 56, 40), (40, 56, 40), 0.5), ((100, 90, 31), (32, 48, 32), 0.25)])
def test_window_count_is_monais(shape, patch, overlap):
    """The batching decision counts the windows exactly as sliding_window_inference tiles them."""
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval

    from segflow.inference.sliding_window import count_windows

    padded = [max(s, p) for s, p in zip(shape, patch)]
    expected = len(dense_patch_slices(padded, patch, _get_scan_interval(padded, patch, 3, (overlap,) * 3)))
    assert count_windows(shape, patch, overlap) == expected


def test_a_large_volume_is_stitched_on_the_cpu_when_the_network_runs_on_a_gpu():
    from segflow.inference.sliding_window import STITCH_ON_GPU_MAX_VOXELS, stitching_device

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert stitching_device(cuda, (1, 1, 64, 64, 64)) == cuda
    assert stitching_device(cuda, (1, 1, STITCH_ON_GPU_MAX_VOXELS + 1)) == cpu
    assert stitching_device(cpu, (1, 1, 4 * STITCH_ON_GPU_MAX_VOXELS)) == cpu
