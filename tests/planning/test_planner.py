"""The planner: nnU-Net's rules on hand-written fingerprints, explicit params winning, every named
network building from its plan, and plan.json read back (or refused) as a whole."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from planning_fixtures import anisotropic_cases, hippocampus_fingerprint, make_fingerprint, model_params, repo_params

from segflow.config import ConfigError, parse_params
from segflow.data.preprocess import Preprocessing, load_case
from segflow.models.factory import NETWORKS, build_network
from segflow.planning.memory import estimate_training_memory_gb
from segflow.planning.plan import Plan, resolve_params
from segflow.planning.planner import (
    CPU_MAX_PATCH_VOXELS,
    MAX_RESAMPLED_CASE_VOXELS,
    make_plan,
    plan_target_spacing,
    plan_topology,
)

CT_STATISTICS = {"mean": 80.0, "std": 40.0, "median": 75.0, "percentile_00_5": -50.0, "percentile_99_5": 250.0,
                 "min": -200.0, "max": 1500.0}


def test_hippocampus_on_cpu_gives_the_tuned_default():
    plan = make_plan(hippocampus_fingerprint(), repo_params(), cuda_available=False)

    assert plan.device == "cpu"
    assert plan.target_spacing == [1.0, 1.0, 1.0]
    assert plan.median_shape == [35, 50, 36]
    assert plan.patch_size == [40, 56, 40]
    assert plan.batch_size == 4
    assert plan.network_args["channels"] == [16, 32, 64, 128]
    assert plan.network_args["strides"] == [2, 2, 2]
    assert [n.scheme for n in plan.normalisation] == ["zscore"]
    assert (plan.network_args["in_channels"], plan.network_args["out_channels"]) == (1, 3)
    assert set(plan.reasons) == {"device", "target_spacing", "normalisation", "patch_size", "network_args",
                                 "batch_size"}
    assert "in_channels=1 from the dataset's image channels" in plan.reasons["network_args"]
    assert 0 < plan.estimated_memory_gb < plan.memory_budget_gb


def test_ct_modality_clips_to_foreground_percentiles_and_uses_the_dataset_zscore():
    fingerprint = hippocampus_fingerprint(modality="non-contrast CT", statistics=CT_STATISTICS)

    plan = make_plan(fingerprint, repo_params(), cuda_available=False)

    (channel,) = plan.normalisation
    assert channel.scheme == "ct"
    assert channel.clip == (-50.0, 250.0)
    assert (channel.mean, channel.std) == (80.0, 40.0)


def test_modality_names_merely_containing_the_letters_ct_stay_zscore():
    plan = make_plan(hippocampus_fingerprint(modality="spectral MRI"), repo_params(), cuda_available=False)
    assert plan.normalisation[0].scheme == "zscore"


def test_anisotropic_spacing_takes_the_coarse_axis_10th_percentile_and_pools_it_less():
    shapes, spacings = anisotropic_cases()

    plan = make_plan(make_fingerprint(shapes, spacings), repo_params(), cuda_available=False)

    assert plan.target_spacing == pytest.approx([0.8, 0.8, np.percentile([s[2] for s in spacings], 10)])
    per_axis = [[s] * 3 if isinstance(s, int) else s for s in plan.network_args["strides"]]
    z_halvings = sum(level[2] == 2 for level in per_axis)
    xy_halvings = sum(level[0] == 2 for level in per_axis)
    assert z_halvings < xy_halvings
    assert all(side % math.prod(level[axis] for level in per_axis) == 0 for axis, side in enumerate(plan.patch_size))
    assert math.prod(plan.patch_size) <= CPU_MAX_PATCH_VOXELS
    build_network(plan.network, plan.network_args)  # MONAI's UNet takes per-axis strides


def test_median_spacing_is_kept_when_no_axis_is_over_three_times_coarser():
    target, reason = plan_target_spacing([[1.0, 1.0, 2.5], [1.0, 1.0, 3.0], [1.0, 1.0, 2.0]])
    assert target == [1.0, 1.0, 2.5]
    assert "median" in reason


def test_a_thin_axis_waits_for_the_others_before_pooling():
    topology = plan_topology([128, 128, 32], [0.5, 0.5, 3.0])
    assert topology.strides[0] == [2, 2, 1]
    assert topology.kernels[0] == [3, 3, 1]  # convolving across 6x coarser slices first is what nnU-Net avoids


def test_cuda_with_a_larger_budget_doubles_the_width_and_the_batch():
    fingerprint = hippocampus_fingerprint(shapes=[[35, 50, 36]] * 200)  # enough voxels for a big batch
    params = repo_params({"train": {"memory_budget_gb": 24}})

    cpu = make_plan(fingerprint, params, cuda_available=False)
    cuda = make_plan(fingerprint, params, cuda_available=True)

    assert cuda.device == "cuda"
    assert cuda.network_args["channels"] == [32, 64, 128, 256]
    assert cuda.batch_size > cpu.batch_size
    assert cuda.estimated_memory_gb <= 24
    # At most 5% of the dataset's voxels per batch.
    assert cuda.batch_size * math.prod(cuda.patch_size) <= 0.05 * 200 * 35 * 50 * 36


def test_a_small_memory_budget_shrinks_the_patch_keeping_it_divisible():
    params = repo_params({"train": {"memory_budget_gb": 0.15}})

    plan = make_plan(hippocampus_fingerprint(), params, cuda_available=True)

    assert math.prod(plan.patch_size) < 40 * 56 * 40
    per_axis = [[s] * 3 if isinstance(s, int) else s for s in plan.network_args["strides"]]
    assert all(side % math.prod(level[axis] for level in per_axis) == 0 for axis, side in enumerate(plan.patch_size))
    assert plan.estimated_memory_gb <= 0.15
    assert "shrunk" in plan.reasons["patch_size"]


def test_a_budget_nothing_fits_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match="train.memory_budget_gb"):
        make_plan(hippocampus_fingerprint(), repo_params({"train": {"memory_budget_gb": 0.01}}), cuda_available=True)


def test_large_images_on_cpu_are_capped_to_a_cpu_sized_patch():
    fingerprint = hippocampus_fingerprint(shapes=[[200, 220, 180]] * 3)
    plan = make_plan(fingerprint, repo_params(), cuda_available=False)
    assert math.prod(plan.patch_size) <= CPU_MAX_PATCH_VOXELS


def test_a_unit_slip_in_target_spacing_is_refused_naming_the_key_and_the_case():
    """0.001 for 1 mm: the plan used to accept a 35008x43616x36000 patch and exit 0."""
    fingerprint = hippocampus_fingerprint()
    fingerprint["case_ids"] = [f"hippocampus_{i:03d}" for i in range(len(fingerprint["shapes"]))]
    params = repo_params({"preprocess": {"target_spacing": [0.001, 0.001, 0.001]}})

    with pytest.raises(ConfigError) as caught:
        make_plan(fingerprint, params, cuda_available=False)

    message = str(caught.value)
    assert "preprocess.target_spacing" in message and "[0.001, 0.001, 0.001]" in message
    assert "hippocampus_002" in message  # the largest case, named with its resampled shape
    assert "[43000, 59000, 47000]" in message


def test_a_case_just_under_the_voxel_limit_still_plans():
    side = int(MAX_RESAMPLED_CASE_VOXELS ** (1 / 3))
    plan = make_plan(hippocampus_fingerprint(shapes=[[side, side, side]] * 3), repo_params(), cuda_available=False)
    assert math.prod(plan.patch_size) <= CPU_MAX_PATCH_VOXELS


def test_huge_scans_shrink_to_a_patch_within_the_budget_on_cuda_too():
    """Far-too-large patches halve their largest side: 1000-voxel sides reach the budget well
    within the step limit, instead of a plan over budget."""
    plan = make_plan(hippocampus_fingerprint(shapes=[[1000, 1000, 1000]] * 3), repo_params(), cuda_available=True)
    assert plan.estimated_memory_gb <= plan.memory_budget_gb
    assert "shrunk" in plan.reasons["patch_size"]


@pytest.mark.parametrize("overrides", [
    {"preprocess": {"patch_size": [256, 256, 256]}, "train": {"memory_budget_gb": 1}},
    {"preprocess": {"patch_size": [64, 64, 64]}, "train": {"batch_size": 64, "memory_budget_gb": 1}},
])
def test_an_explicit_patch_or_batch_over_the_memory_budget_is_refused(overrides):
    with pytest.raises(ConfigError) as caught:
        make_plan(hippocampus_fingerprint(), repo_params(overrides), cuda_available=False)
    message = str(caught.value)
    assert "train.memory_budget_gb" in message and "over the budget of 1 GB" in message
    assert "preprocess.patch_size" in message and "train.batch_size" in message


@pytest.mark.parametrize(("layout", "source"), [("msd", "dataset.json labels"), ("folders2d", "data.labels")])
def test_out_channels_disagreeing_with_the_declared_classes_is_refused_at_plan(layout, source):
    data = {"layout": layout, "labels": {0: "cell", 1: "membrane"} if layout == "folders2d" else None}
    params = repo_params({"data": data, "model": {"out_channels": 2}})

    with pytest.raises(ConfigError) as caught:
        make_plan(hippocampus_fingerprint(), params, cuda_available=False)

    message = str(caught.value)
    assert "model.out_channels is 2" in message and source in message
    assert "3 classes" in message and "posterior" in message


def test_explicit_params_win_and_the_dependent_choices_follow_them():
    params = repo_params({"preprocess": {"patch_size": [32, 48, 32], "target_spacing": [1.5, 1.5, 1.5]},
                          "model": {"channels": [8, 16, 32]}, "train": {"device": "cpu"}})

    plan = make_plan(hippocampus_fingerprint(), params, cuda_available=True)

    assert plan.device == "cpu"
    assert plan.patch_size == [32, 48, 32]
    assert plan.target_spacing == [1.5, 1.5, 1.5]
    assert plan.network_args["channels"] == [8, 16, 32]
    assert len(plan.network_args["strides"]) == 2  # one stride per channel step
    expected = estimate_training_memory_gb("UNet", plan.network_args, [32, 48, 32], plan.batch_size)
    assert plan.estimated_memory_gb == pytest.approx(expected, abs=1e-3)


def test_explicit_batch_and_normalisation_win():
    params = repo_params({"preprocess": {"normalisation": "ct"}, "train": {"batch_size": 3}})
    plan = make_plan(hippocampus_fingerprint(statistics=CT_STATISTICS), params, cuda_available=False)
    assert plan.batch_size == 3
    assert plan.normalisation[0].scheme == "ct"


def test_ct_without_foreground_statistics_is_a_clear_config_error():
    params = repo_params({"preprocess": {"normalisation": "ct"}})
    with pytest.raises(ConfigError, match="ct needs foreground intensities"):
        make_plan(hippocampus_fingerprint(statistics=None), params, cuda_available=False)


@pytest.mark.parametrize("name, divisor", [("UNETR", 16), ("SwinUNETR", 32), ("BasicUNet", 16), ("SegResNet", 8)])
def test_patch_sides_divide_by_the_network_divisor(name, divisor):
    plan = make_plan(hippocampus_fingerprint(), model_params(name), cuda_available=False)
    assert all(side % divisor == 0 and side >= 35 for side in plan.patch_size)


AUTO_ARGS = {
    "UNet": {"channels": "auto", "strides": "auto", "num_res_units": 2},
    "AttentionUnet": {"channels": "auto", "strides": "auto"},
    "BasicUNet": {"features": "auto"},
    "BasicUNetPlusPlus": {"features": "auto"},
    "DynUNet": {"filters": "auto"},  # kernel_size, strides, upsample_kernel_size: required, planned when absent
    "SegResNet": {"init_filters": "auto"},
    "UNETR": {"feature_size": "auto", "hidden_size": 96, "mlp_dim": 192, "num_heads": 4},
    "SwinUNETR": {"feature_size": "auto", "depths": [1, 1, 1, 1]},
}


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_every_named_network_builds_from_its_plan_and_runs_on_a_patch(name):
    small = hippocampus_fingerprint(shapes=[[20, 40, 20]] * 3)  # small patches keep the forward passes fast
    plan = make_plan(small, model_params(name, **AUTO_ARGS[name]), cuda_available=False)

    assert "auto" not in plan.network_args.values()
    net = build_network(plan.network, plan.network_args).eval()
    with torch.no_grad():
        output = net(torch.zeros(1, 1, *plan.patch_size))
    assert output.shape == (1, 3, *plan.patch_size)


def test_dynunet_plan_follows_nnunet_layout():
    plan = make_plan(hippocampus_fingerprint(), model_params("DynUNet", filters="auto"), cuda_available=False)
    args = plan.network_args
    assert args["strides"] == [1, 2, 2, 2]
    assert args["upsample_kernel_size"] == [2, 2, 2]
    assert args["kernel_size"] == [3, 3, 3, 3]
    assert args["filters"] == [16, 32, 64, 128]


def test_2d_plan_for_planar_images():
    fingerprint = make_fingerprint([[512, 512]] * 4, [[1.0, 1.0]] * 4, modality="EM")
    plan = make_plan(fingerprint, model_params("UNet", spatial_dims=2, channels="auto", strides="auto"),
                     cuda_available=False)
    assert plan.patch_size == [512, 512]
    assert plan.network_args["strides"] == [2, 2, 2, 2, 2]
    assert plan.network_args["channels"] == [16, 32, 64, 128, 256, 320]


def test_resolve_params_leaves_no_auto():
    params = repo_params()
    assert params.unresolved()  # the repo's params.yaml relies on the plan

    resolved = resolve_params(params, make_plan(hippocampus_fingerprint(), params, cuda_available=False))

    assert resolved.unresolved() == []
    assert resolved.preprocess.patch_size == [40, 56, 40]
    assert resolved.preprocess.normalisation == "zscore"
    assert resolved.model.network_args()["channels"] == [16, 32, 64, 128]
    assert (resolved.train.batch_size, resolved.train.device) == (4, "cpu")
    assert resolved.augment.flip_prob == params.augment.flip_prob  # the rest is untouched


def test_resolved_params_build_the_planned_network_with_required_args_filled():
    params = model_params("DynUNet", filters="auto")
    plan = make_plan(hippocampus_fingerprint(), params, cuda_available=False)

    resolved = resolve_params(params, plan)

    assert resolved.model.network_args() == plan.network_args
    assert resolved.model.network_args()["strides"] == [1, 2, 2, 2]


def test_an_explicit_patch_off_the_network_divisor_is_kept_and_flagged_where_the_network_copes():
    params = model_params("BasicUNet", features="auto")
    raw = params.model_dump(by_alias=True)
    raw["preprocess"]["patch_size"] = [36, 50, 36]

    plan = make_plan(hippocampus_fingerprint(), parse_params(raw), cuda_available=False)

    assert plan.patch_size == [36, 50, 36]
    assert "not a multiple of [16, 16, 16]" in plan.reasons["patch_size"]


def test_an_explicit_patch_the_network_cannot_run_on_is_a_config_error():
    with pytest.raises(ConfigError, match=r"preprocess.patch_size \[36, 50, 36\].*not a multiple of \[8, 8, 8\]"):
        make_plan(hippocampus_fingerprint(), repo_params({"preprocess": {"patch_size": [36, 50, 36]}}),
                  cuda_available=False)


def test_resolve_params_names_an_auto_the_plan_cannot_fill():
    plan = make_plan(hippocampus_fingerprint(), repo_params(), cuda_available=False)
    with pytest.raises(ConfigError, match="model.dropout"):
        resolve_params(repo_params({"model": {"dropout": "auto"}}), plan)


def test_an_auto_argument_the_planner_does_not_know_is_a_config_error_naming_it():
    with pytest.raises(ConfigError, match="model.dropout"):
        make_plan(hippocampus_fingerprint(), repo_params({"model": {"dropout": "auto"}}), cuda_available=False)


def test_plan_round_trips_through_json_and_builds_the_same_network(tmp_path):
    shapes, spacings = anisotropic_cases()
    plan = make_plan(make_fingerprint(shapes, spacings, modality="CT", statistics=CT_STATISTICS), repo_params(),
                     cuda_available=False)

    plan.save(tmp_path / "plan.json")
    loaded = Plan.load(tmp_path / "plan.json")

    assert loaded == plan
    build_network(loaded.network, loaded.network_args)
    stored = loaded.preprocessing.model_dump()  # as kept inside a model file
    assert Preprocessing.model_validate(stored) == plan.preprocessing


def test_preprocessing_from_a_plain_dict_drives_load_case(tmp_path):
    from conftest import save_nifti

    save_nifti(tmp_path / "ct.nii.gz", np.full((8, 8, 4), 1000.0, np.float32), spacing=(0.8, 0.8, 5.0))
    plan = make_plan(make_fingerprint(*anisotropic_cases(), modality="CT", statistics=CT_STATISTICS), repo_params(),
                     cuda_available=False)

    volume = load_case(tmp_path / "ct.nii.gz", preprocessing=plan.preprocessing.model_dump())

    assert volume.image.shape == (1, 8, 8, 8)  # 4 slices of 5 mm at 2.5 mm
    assert np.allclose(volume.image, (250.0 - 80.0) / 40.0)  # clipped to the 99.5th percentile


@pytest.mark.parametrize("content, expected", [
    ("{not json", "not valid JSON"),
    ('{"format": "segflow-plan/1", "device": "tpu"}', "not a valid plan"),
    ("[1, 2]", "not a valid plan"),
])
def test_a_corrupted_plan_is_a_clear_error_naming_the_file(tmp_path, content, expected):
    path = tmp_path / "plan.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=expected) as error:
        Plan.load(path)
    assert str(path) in str(error.value)
    assert "pydantic" not in str(error.value)


def test_a_missing_plan_says_to_run_the_plan_stage(tmp_path):
    with pytest.raises(ConfigError, match="run the plan stage") as error:
        Plan.load(tmp_path / "plan.json")
    assert str(tmp_path / "plan.json") in str(error.value)
