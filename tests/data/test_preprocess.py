"""Per-case preprocessing: today's per-case z-score without a plan; with the plan's preprocessing,
CT normalisation and resampling to the target spacing, and predictions brought back to the
input grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import save_nifti, synthetic_case

from segflow.data.preprocess import (
    ChannelNormalisation,
    Preprocessing,
    load_case,
    normalise_channel,
    restore_to_shape,
)

ZSCORE = ChannelNormalisation(scheme="zscore")
CT = ChannelNormalisation(scheme="ct", clip=(-100.0, 300.0), mean=50.0, std=100.0)


def write_case(tmp_path, spacing=(1.0, 1.0, 1.0), shape=(20, 24, 16)):
    image, label = synthetic_case(0, shape)
    save_nifti(tmp_path / "image.nii.gz", image, spacing)
    save_nifti(tmp_path / "label.nii.gz", label, spacing)
    return tmp_path / "image.nii.gz", tmp_path / "label.nii.gz", label


def test_without_a_plan_each_case_is_zscored_on_its_own_grid(tmp_path):
    image_path, label_path, label = write_case(tmp_path, spacing=(2.0, 2.0, 2.0))

    volume = load_case(image_path, label_path)

    assert volume.image.shape == (1, 20, 24, 16)
    assert abs(float(volume.image.mean())) < 1e-4 and abs(float(volume.image.std()) - 1) < 1e-3
    np.testing.assert_array_equal(volume.label[0], label)
    assert volume.original_shape is None
    assert volume.spacing == (2.0, 2.0, 2.0)


def test_ct_normalisation_clips_then_uses_the_dataset_statistics():
    hounsfield = np.array([-1000.0, -100.0, 50.0, 300.0, 3000.0], np.float32)
    np.testing.assert_allclose(normalise_channel(hounsfield, CT), [-1.5, -1.5, 0.0, 2.5, 2.5])


def test_resampling_2mm_to_1mm_doubles_the_shape_and_keeps_labels_integral(tmp_path):
    image_path, label_path, label = write_case(tmp_path, spacing=(2.0, 2.0, 2.0))
    plan = Preprocessing(target_spacing=[1.0, 1.0, 1.0], normalisation=[ZSCORE])

    volume = load_case(image_path, label_path, preprocessing=plan)

    assert volume.image.shape == (1, 40, 48, 32)
    assert volume.label.shape == (1, 40, 48, 32) and volume.label.dtype == np.uint8
    assert set(np.unique(volume.label)) == set(np.unique(label))
    # Nearest neighbour on a doubled grid: every class keeps 8x its voxels (to within the edges).
    for value in (1, 2):
        assert (volume.label == value).sum() == pytest.approx(8 * (label == value).sum(), rel=0.05)
    assert volume.original_shape == (20, 24, 16)
    assert volume.spacing == (1.0, 1.0, 1.0)


def test_spacing_within_one_percent_of_the_target_is_not_resampled(tmp_path):
    image_path, label_path, _ = write_case(tmp_path, spacing=(1.005, 1.0, 0.995))
    plan = Preprocessing(target_spacing=[1.0, 1.0, 1.0], normalisation=[ZSCORE])

    volume = load_case(image_path, label_path, preprocessing=plan)

    np.testing.assert_array_equal(volume.image, load_case(image_path, label_path).image)
    assert volume.original_shape == (20, 24, 16)
    assert volume.spacing == pytest.approx((1.005, 1.0, 0.995))  # the case's own, kept


def test_ct_plan_from_a_plain_dict_normalises_as_planned(tmp_path):
    image_path, _, _ = write_case(tmp_path)
    stored = Preprocessing(target_spacing=[1.0, 1.0, 1.0], normalisation=[CT]).model_dump()

    volume = load_case(image_path, preprocessing=stored)

    assert float(volume.image.max()) <= 2.5 + 1e-6  # 300 clipped, (300 - 50) / 100
    assert volume.label is None


def test_a_plan_for_another_channel_count_is_refused(tmp_path):
    image_path, _, _ = write_case(tmp_path)
    plan = Preprocessing(target_spacing=[1.0, 1.0, 1.0], normalisation=[ZSCORE, ZSCORE])
    with pytest.raises(ValueError, match="2 channel"):
        load_case(image_path, preprocessing=plan)


@pytest.mark.parametrize("as_tensor", [False, True])
def test_restore_to_shape_returns_the_input_grid_and_the_same_labels(tmp_path, as_tensor):
    image_path, label_path, label = write_case(tmp_path, spacing=(2.0, 2.0, 2.0))
    volume = load_case(image_path, label_path,
                       preprocessing=Preprocessing(target_spacing=[1.0, 1.0, 1.0], normalisation=[ZSCORE]))
    one_hot = np.eye(3, dtype=np.float32)[volume.label[0]].transpose(3, 0, 1, 2)  # a perfect prediction
    probabilities = torch.from_numpy(one_hot) if as_tensor else one_hot

    restored = restore_to_shape(probabilities, volume.original_shape)

    assert isinstance(restored, torch.Tensor) == as_tensor
    assert tuple(restored.shape) == (3, 20, 24, 16)
    labels = np.asarray(restored).argmax(0)
    assert (labels == label).mean() > 0.98


def test_restore_to_the_same_shape_changes_nothing():
    probabilities = np.random.default_rng(0).random((2, 5, 6, 7)).astype(np.float32)
    np.testing.assert_array_equal(restore_to_shape(probabilities, [5, 6, 7]), probabilities)


def test_2d_images_have_unit_spacing_and_are_never_resampled_at_unit_target(tmp_path):
    import cv2

    cv2.imwrite(str(tmp_path / "image.png"), np.arange(64 * 48, dtype=np.uint16).reshape(64, 48))
    plan = Preprocessing(target_spacing=[1.0, 1.0], normalisation=[ZSCORE])

    volume = load_case(tmp_path / "image.png", preprocessing=plan)

    assert volume.image.shape == (1, 64, 48)
    assert (volume.original_shape, volume.spacing) == ((64, 48), (1.0, 1.0))
