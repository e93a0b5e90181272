"""Configurations (nnU-Net's 3d and 2d): the selection on fabricated out-of-fold scores, the 2d
configuration's plan of 3D data, the params it trains with, and its slice-wise network."""

from __future__ import annotations

import pytest
import torch
from planning_fixtures import anisotropic_cases, hippocampus_fingerprint, make_fingerprint, repo_params

from segflow.models.factory import build_network, network_dims
from segflow.planning.configurations import (
    ENSEMBLE,
    configuration_params,
    native_name,
    planned_configurations,
    select_configuration,
)
from segflow.planning.plan import TrainingPlan, resolve_params
from segflow.planning.planner import make_plan, plan_slice_configuration, slice_axis

ORDER = ["3d", "2d", ENSEMBLE]


def test_the_best_out_of_fold_dice_is_selected_with_every_candidates_score():
    selection = select_configuration({"3d": 0.861, "2d": 0.842, ENSEMBLE: 0.872}, ORDER)
    assert selection.selected == ENSEMBLE
    assert selection.dice == {"3d": 0.861, "2d": 0.842, ENSEMBLE: 0.872}
    assert selection.reason == "ensemble has the highest out-of-fold mean Dice (0.8720; 3d 0.8610, 2d 0.8420)"


def test_a_single_configuration_beats_an_ensemble_that_does_not_help():
    assert select_configuration({"3d": 0.87, "2d": 0.80, ENSEMBLE: 0.86}, ORDER).selected == "3d"
    assert select_configuration({"3d": 0.80, "2d": 0.85, ENSEMBLE: 0.84}, ORDER).selected == "2d"


def test_a_tie_goes_to_the_simpler_candidate():
    assert select_configuration({"3d": 0.85, "2d": 0.85, ENSEMBLE: 0.85}, ORDER).selected == "3d"
    assert select_configuration({"3d": 0.84, "2d": 0.85, ENSEMBLE: 0.85}, ORDER).selected == "2d"


def test_one_configuration_is_selected_as_the_only_one():
    selection = select_configuration({"3d": 0.86}, ["3d"])
    assert (selection.selected, selection.reason) == ("3d", "3d is the only configuration trained")


def test_slices_are_cut_across_the_coarsest_axis():
    assert slice_axis([1.0, 1.0, 1.0]) == 0
    assert slice_axis([0.8, 0.8, 5.0]) == 2


def test_the_2d_configuration_of_hippocampus_plans_the_in_plane_patch():
    params = repo_params()
    plan = make_plan(hippocampus_fingerprint(), params, cuda_available=False)
    slices = plan_slice_configuration(hippocampus_fingerprint(), params, plan)
    assert slices.slice_axis == 0
    assert len(slices.patch_size) == 2 and slices.network_args["spatial_dims"] == 2
    assert all(p >= s for p, s in zip(slices.patch_size, plan.median_shape[1:], strict=True))


def test_thick_slice_data_is_sliced_along_its_thick_axis():
    shapes, spacings = anisotropic_cases()
    fingerprint = make_fingerprint(shapes, spacings)
    params = repo_params()
    plan = make_plan(fingerprint, params, cuda_available=False)
    slices = plan_slice_configuration(fingerprint, params, plan)
    assert slices.slice_axis == 2
    assert len(slices.patch_size) == 2


def test_the_2d_configuration_trains_a_slice_wise_network_on_one_slice_patches():
    params = repo_params()
    plan = make_plan(hippocampus_fingerprint(), params, cuda_available=False)
    slices = plan_slice_configuration(hippocampus_fingerprint(), params, plan)
    training = TrainingPlan(slice_configuration=slices)
    resolved = resolve_params(params, plan)
    assert configuration_params(resolved, plan, training, "3d") is resolved
    two_d = configuration_params(resolved, plan, training, "2d")
    assert two_d.preprocess.patch_size == [1, *slices.patch_size]
    assert two_d.train.batch_size == slices.batch_size
    args = two_d.model.network_args()
    assert args["slice_axis"] == 0 and network_dims(args) == 2
    net = build_network(two_d.model.name, args).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 1, 1, *slices.patch_size))
    assert out.shape == (2, 3, 1, *slices.patch_size)


def test_without_a_budget_only_the_native_configuration_trains():
    plan = make_plan(hippocampus_fingerprint(), repo_params(), cuda_available=False)
    assert planned_configurations(TrainingPlan(), 3) == [native_name(3)] == ["3d"]
    with pytest.raises(ValueError, match="has no 2d configuration"):
        configuration_params(resolve_params(repo_params(), plan), plan, TrainingPlan(), "2d")


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_a_slice_wise_network_is_its_2d_network_on_every_slice(axis):
    args = {"spatial_dims": 3, "slice_axis": axis, "in_channels": 1, "out_channels": 2, "channels": [4, 8],
            "strides": [2], "num_res_units": 1}
    torch.manual_seed(0)
    net = build_network("UNet", args).eval()
    volume = torch.randn(1, 1, 6, 8, 10)
    with torch.no_grad():
        out = net(volume)
        for index in range(volume.shape[2 + axis]):
            alone = net.net(volume.select(2 + axis, index))
            torch.testing.assert_close(out.select(2 + axis, index), alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("axis", [0, 2])
def test_a_slice_wise_network_keeps_its_deep_supervision_heads_in_training(axis):
    args = {"spatial_dims": 3, "slice_axis": axis, "in_channels": 1, "out_channels": 2,
            "kernel_size": [3, 3, 3], "strides": [1, 2, 2], "upsample_kernel_size": [2, 2],
            "filters": [4, 8, 16], "deep_supervision": True, "deep_supr_num": 1}
    torch.manual_seed(0)
    net = build_network("DynUNet", args)
    volume = torch.randn(2, 1, 8, 8, 8)
    heads = net.train()(volume)
    assert heads.shape == (2, 2, 2, 8, 8, 8)  # (B, main + 1 head, C, *spatial)
    slice_heads = net.net(volume.select(2 + axis, 3))  # (B, 2, C, 8, 8)
    torch.testing.assert_close(heads.select(3 + axis, 3), slice_heads, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        main = net.eval()(volume)
        assert main.shape == (2, 2, 8, 8, 8)
        torch.testing.assert_close(main.select(2 + axis, 3), net.net(volume.select(2 + axis, 3)),
                                   rtol=1e-5, atol=1e-5)


def test_the_2d_batch_carries_the_voxels_of_the_3d_batch():
    params = repo_params()
    plan = make_plan(hippocampus_fingerprint(), params, cuda_available=False)
    slices = plan_slice_configuration(hippocampus_fingerprint(), params, plan)
    matched = round(plan.batch_size * 40 * 56 * 40 / (slices.patch_size[0] * slices.patch_size[1]))
    assert matched == 160 and slices.batch_size <= matched
    assert slices.reasons["batch_size"].startswith("160 slices carry the voxels of the 3d batch (4 x [40, 56, 40])")


def test_an_explicit_batch_is_the_2d_batch_too():
    params = repo_params({"train": {"batch_size": 2}})
    plan = make_plan(hippocampus_fingerprint(), params, cuda_available=False)
    assert plan_slice_configuration(hippocampus_fingerprint(), params, plan).batch_size == 2
