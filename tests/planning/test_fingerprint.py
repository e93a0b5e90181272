"""The dataset fingerprint: geometry, foreground intensities and class frequencies of small cases
whose answers are known by construction, in 3D NIfTI and 2D PNG."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import save_nifti

from segflow.planning.fingerprint import (
    SAMPLES_PER_CASE,
    compute_fingerprint,
    geometry_summary,
    sample_foreground,
    training_ranges_from_fingerprint,
)

LABELS = {"0": "background", "1": "anterior", "2": "posterior"}
# (shape, spacing, voxels of class 1, voxels of class 2)
CASES = {
    "a": ((10, 12, 8), (1.0, 1.0, 2.0), 40, 20),
    "b": ((12, 12, 10), (1.0, 1.0, 3.0), 60, 0),
    "c": ((14, 10, 8), (1.2, 1.0, 2.0), 30, 30),
}
VALUE = {0: 5.0, 1: 100.0, 2: 300.0}  # intensity of every voxel of a class


def labelled_case(shape, n_first: int, n_second: int) -> tuple[np.ndarray, np.ndarray]:
    label = np.zeros(int(np.prod(shape)), np.uint8)
    label[:n_first] = 1
    label[n_first:n_first + n_second] = 2
    label = label.reshape(shape)
    image = np.vectorize(VALUE.get)(label).astype(np.float32)
    return image, label


def write_cases(root, cases=CASES) -> pd.DataFrame:
    rows = []
    for case_id, (shape, spacing, n_first, n_second) in cases.items():
        image, label = labelled_case(shape, n_first, n_second)
        save_nifti(root / "imagesTr" / f"{case_id}.nii.gz", image, spacing)
        save_nifti(root / "labelsTr" / f"{case_id}.nii.gz", label, spacing)
        rows.append({"case_id": case_id, "image": f"imagesTr/{case_id}.nii.gz", "label": f"labelsTr/{case_id}.nii.gz"})
    return pd.DataFrame(rows)


def fingerprint_of(root, manifest, kept=None, **overrides) -> dict:
    arguments = {"labels": LABELS, "modality": {"0": "MRI"}, "label_map": None, "spatial_dims": 3} | overrides
    return compute_fingerprint(root, manifest, kept or list(manifest["case_id"]), **arguments)


def test_geometry_is_per_case_and_summarised_per_axis(tmp_path):
    fingerprint = fingerprint_of(tmp_path, write_cases(tmp_path))

    assert fingerprint["format"] == "segflow-fingerprint/1"
    assert (fingerprint["n_cases"], fingerprint["spatial_dims"], fingerprint["n_channels"]) == (3, 3, 1)
    assert fingerprint["shapes"] == [[10, 12, 8], [12, 12, 10], [14, 10, 8]]
    assert fingerprint["spacings"] == [[1.0, 1.0, 2.0], [1.0, 1.0, 3.0], [1.2, 1.0, 2.0]]  # float32 header, rounded
    assert fingerprint["median_shape"] == [12, 12, 8]
    assert fingerprint["min_shape"] == [10, 10, 8] and fingerprint["max_shape"] == [14, 12, 10]
    assert fingerprint["median_spacing"] == [1.0, 1.0, 2.0]
    assert fingerprint["max_spacing"] == [1.2, 1.0, 3.0]
    json.dumps(fingerprint)  # stored as fingerprint.json


def test_foreground_statistics_use_only_labelled_voxels(tmp_path):
    stats = fingerprint_of(tmp_path, write_cases(tmp_path))["foreground_intensity"]["0"]

    n_first, n_second = 40 + 60 + 30, 20 + 0 + 30
    values = np.array([100.0] * n_first + [300.0] * n_second)
    assert stats["mean"] == pytest.approx(values.mean())
    assert stats["std"] == pytest.approx(values.std())
    assert stats["median"] == 100.0
    assert (stats["min"], stats["max"]) == (100.0, 300.0)  # the background's 5.0 never counts
    assert stats["percentile_00_5"] == 100.0 and stats["percentile_99_5"] == 300.0


def test_class_frequencies_count_voxels_and_cases(tmp_path):
    classes = fingerprint_of(tmp_path, write_cases(tmp_path))["class_frequencies"]

    total = 10 * 12 * 8 + 12 * 12 * 10 + 14 * 10 * 8
    assert classes["1"]["voxel_fraction"] == pytest.approx(130 / total)
    assert classes["2"]["voxel_fraction"] == pytest.approx(50 / total)
    assert sum(c["voxel_fraction"] for c in classes.values()) == pytest.approx(1.0)
    assert classes["1"]["case_fraction"] == 1.0
    assert classes["2"]["case_fraction"] == pytest.approx(2 / 3)  # case b has no posterior
    assert classes["2"]["name"] == "posterior"


def test_only_kept_cases_are_fingerprinted(tmp_path):
    fingerprint = fingerprint_of(tmp_path, write_cases(tmp_path), kept=["a", "c"])
    assert fingerprint["case_ids"] == ["a", "c"]
    assert fingerprint["class_frequencies"]["2"]["case_fraction"] == 1.0


def test_foreground_is_sampled_to_a_fixed_number_of_voxels_reproducibly():
    image = np.arange(50_000, dtype=np.float32).reshape(1, 50, 100, 10)
    label = np.ones((50, 100, 10), np.uint8)

    first = sample_foreground(image, label, np.random.default_rng(1234))
    again = sample_foreground(image, label, np.random.default_rng(1234))

    assert len(first[0]) == SAMPLES_PER_CASE
    np.testing.assert_array_equal(first[0], again[0])
    assert len(set(first[0].tolist())) == SAMPLES_PER_CASE  # distinct voxels, not repeats


def test_one_file_per_channel_gives_statistics_per_channel(tmp_path):
    manifest = write_cases(tmp_path, {"a": CASES["a"]})
    shape, spacing, n_first, n_second = CASES["a"]
    image, _ = labelled_case(shape, n_first, n_second)
    save_nifti(tmp_path / "imagesTr" / "a_0001.nii.gz", image * 2, spacing)
    manifest["image_channels"] = json.dumps(["imagesTr/a.nii.gz", "imagesTr/a_0001.nii.gz"])

    fingerprint = fingerprint_of(tmp_path, manifest, modality={"0": "T1", "1": "T2"})

    assert fingerprint["n_channels"] == 2
    assert fingerprint["foreground_intensity"]["1"]["max"] == 2 * fingerprint["foreground_intensity"]["0"]["max"]


def test_2d_png_cases_have_unit_spacing_and_mapped_labels(tmp_path):
    import cv2

    rows = []
    for i, shape in enumerate([(64, 48), (60, 50), (70, 40)]):
        mask = np.zeros(shape, np.uint8)
        mask[:10] = 255  # raw membrane value, mapped to class 1
        image = np.where(mask > 0, 200, 20).astype(np.uint8)
        for folder, array in (("image", image), ("label", mask)):
            (tmp_path / folder).mkdir(exist_ok=True)
            cv2.imwrite(str(tmp_path / folder / f"{i}.png"), array)
        rows.append({"case_id": str(i), "image": f"image/{i}.png", "label": f"label/{i}.png"})

    fingerprint = fingerprint_of(tmp_path, pd.DataFrame(rows), labels={"0": "cell", "1": "membrane"},
                                 modality={"0": "EM"}, label_map={255: 1, 0: 0}, spatial_dims=2)

    assert fingerprint["spacings"] == [[1.0, 1.0]] * 3
    assert fingerprint["median_shape"] == [64, 48]
    assert fingerprint["foreground_intensity"]["0"]["mean"] == 200.0
    assert fingerprint["class_frequencies"]["1"]["case_fraction"] == 1.0


def test_dimensionality_other_than_the_model_is_refused(tmp_path):
    with pytest.raises(ValueError, match="spatial_dims is 2 but the cases are \\[3\\]D"):
        fingerprint_of(tmp_path, write_cases(tmp_path), spatial_dims=2)


def test_training_ranges_come_from_the_fingerprint():
    spacings, shapes = [[1.0, 1.0, 1.0], [1.0, 1.5, 2.0]], [[30, 40, 20], [36, 52, 28]]
    fingerprint = {"n_cases": 2, **geometry_summary("spacing", spacings), **geometry_summary("shape", shapes)}
    assert training_ranges_from_fingerprint(fingerprint) == {
        "n_cases": 2, "shape": {"min": [30, 40, 20], "max": [36, 52, 28]},
        "spacing": {"min": [1.0, 1.0, 1.0], "max": [1.0, 1.5, 2.0]}}
