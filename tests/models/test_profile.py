"""Model cost: parameters and FLOPs count every member, latency and peak memory are measured."""

from __future__ import annotations

import sys

import pytest
import torch

from segflow.models.factory import build_network
from segflow.models.model_file import ModelFile, save_model_file
from segflow.models.profile import input_shape, profile_bundle, profile_model_file

ARGS = dict(spatial_dims=3, in_channels=1, out_channels=3, channels=[4, 8], strides=[2], num_res_units=1)
LABELS = {"0": "background", "1": "Anterior", "2": "Posterior"}


def tiny_bundle(members: int = 1, seed: int = 0) -> ModelFile:
    torch.manual_seed(seed)
    states = [build_network("UNet", ARGS).state_dict() for _ in range(members)]
    return ModelFile(network="UNet", network_args=ARGS, patch_size=[16, 16, 16], labels=LABELS,
                       state_dicts=states, folds=list(range(members)))


@pytest.fixture(scope="module")
def one_and_two():
    return (profile_bundle(tiny_bundle(1), repeats=3, warmup=1, threads=1),
            profile_bundle(tiny_bundle(2), repeats=3, warmup=1, threads=1))


def test_parameters_are_the_sum_over_all_members(one_and_two):
    one, two = one_and_two
    net = build_network("UNet", ARGS)
    assert one.params == sum(p.numel() for p in net.parameters())
    assert two.params == 2 * one.params and two.members == 2


def test_an_ensemble_of_two_costs_two_forwards_of_flops(one_and_two):
    one, two = one_and_two
    assert one.flops > 0
    assert two.flops == 2 * one.flops


def test_latency_and_memory_are_measured_on_the_patch(one_and_two):
    one, _ = one_and_two
    assert one.latency_ms > 0
    assert one.input_shape == [1, 1, 16, 16, 16] and one.device == "cpu" and one.threads == 1
    if sys.platform.startswith("linux"):
        assert one.peak_mb > 0


def test_input_shape_follows_in_channels_and_patch():
    bundle = tiny_bundle()
    bundle.network_args = {**ARGS, "in_channels": 2}
    bundle.patch_size = [8, 12, 16]
    assert input_shape(bundle) == [1, 2, 8, 12, 16]


@pytest.mark.slow  # a real subprocess or several processes: seconds, not milliseconds
def test_a_model_file_measured_in_a_fresh_process_counts_the_same(tmp_path, one_and_two):
    path = tmp_path / "model.pt"
    save_model_file(path, tiny_bundle(1))
    cost = profile_model_file(path, repeats=2, warmup=1, threads=1)
    assert (cost.params, cost.flops, cost.members) == (one_and_two[0].params, one_and_two[0].flops, 1)
    assert cost.latency_ms > 0


def test_a_broken_model_file_names_the_file(tmp_path):
    path = tmp_path / "broken.pt"
    path.write_bytes(b"not a model")
    with pytest.raises(RuntimeError, match="broken.pt"):
        profile_model_file(path, repeats=1, warmup=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown where CUDA is absent")
def test_cuda_without_a_device_is_a_clear_error():
    with pytest.raises(RuntimeError, match="no CUDA device"):
        profile_bundle(tiny_bundle(), device="cuda")
