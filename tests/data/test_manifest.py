"""build_manifest: one row per case recording what validation judges; a bad case never crashes it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from segflow.data.manifest import build_manifest
from segflow.data.msd import read_msd_dataset

REAL = Path("/work/shared/datasets/Task04_Hippocampus")
SHAPE = (6, 7, 5)


def save_nifti(path: Path, array: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(array, np.diag([*spacing, 1.0]))
    image.header.set_data_dtype(array.dtype)
    nib.save(image, str(path))


def image_array(shape=SHAPE) -> np.ndarray:
    return np.arange(np.prod(shape), dtype=np.float32).reshape(shape)


def label_array(shape=SHAPE, dtype=np.uint8) -> np.ndarray:
    label = np.zeros(shape, dtype=dtype)
    label[1:3, 1:3, 1:3] = 1
    label[3:5, 3:5, 2:4] = 2
    return label


def write_case(root: Path, case_id: str, image: np.ndarray | bytes | None, label: np.ndarray | bytes | None) -> None:
    for folder, content in (("imagesTr", image), ("labelsTr", label)):
        path = root / folder / f"{case_id}.nii.gz"
        if content is None:
            continue
        if isinstance(content, bytes):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        else:
            save_nifti(path, content)


def write_descriptor(root: Path, case_ids: list[str]) -> None:
    training = [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in case_ids]
    labels = {"0": "background", "1": "anterior", "2": "posterior"}
    (root / "dataset.json").write_text(json.dumps({"name": "Toy", "labels": labels, "training": training}))


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> pd.DataFrame:
    root = tmp_path_factory.mktemp("msd")
    nan_image = image_array()
    nan_image[0, 0, 0] = np.nan
    extra_value = label_array()
    extra_value[0, 0, 0] = 3
    cases = {
        "good": (image_array(), label_array()),
        "no_image": (None, label_array()),
        "float_label": (image_array(), label_array(dtype=np.float32)),
        "value_3": (image_array(), extra_value),
        "nan_image": (nan_image, label_array()),
        "garbage": (b"\x1f\x8b this is not a NIfTI file", label_array()),
        "mismatch": (image_array(), label_array(shape=(6, 7, 4))),
        "twin_a": (image_array(), label_array()),
        "twin_b": (image_array(), label_array()),
    }
    for case_id, (image, label) in cases.items():
        write_case(root, case_id, image, label)
    for twin in ("twin_a", "twin_b"):  # byte-identical copies (nibabel's gzip stamps a time)
        for folder in ("imagesTr", "labelsTr"):
            shutil.copyfile(root / folder / "good.nii.gz", root / folder / f"{twin}.nii.gz")
    write_descriptor(root, list(cases))
    return build_manifest(read_msd_dataset(root)).set_index("case_id", drop=False)


def test_one_row_per_case_with_stable_leading_columns(manifest):
    assert len(manifest) == 9
    assert list(manifest.columns[:6]) == ["case_id", "listed", "image", "label", "image_exists", "label_exists"]


def test_good_case_row_describes_geometry_and_labels(manifest):
    row = manifest.loc["good"]
    assert row["image_exists"] and row["label_exists"]
    assert row["image_error"] == "" and row["label_error"] == ""
    assert json.loads(row["image_shape"]) == list(SHAPE) == json.loads(row["label_shape"])
    assert json.loads(row["image_spacing"]) == [1.0, 1.0, 1.0]
    assert row["image_dtype"] == "float32" and row["label_dtype"] == "uint8"
    assert json.loads(row["label_values"]) == [0, 1, 2]
    assert row["label_integral"]
    assert json.loads(row["label_voxels"]) == {"0": 194, "1": 8, "2": 8}
    assert row["intensity_finite"]
    assert row["intensity_mean"] == pytest.approx(float(image_array().mean()))


def test_missing_image_file_is_recorded_not_raised(manifest):
    row = manifest.loc["no_image"]
    assert row["image"] == "imagesTr/no_image.nii.gz"
    assert not row["image_exists"]
    assert row["label_exists"]
    assert pd.isna(row["image_shape"])


def test_float_stored_label_is_recorded_with_its_dtype_and_still_integral(manifest):
    row = manifest.loc["float_label"]
    assert row["label_dtype"] == "float32"
    assert row["label_integral"]
    assert json.loads(row["label_values"]) == [0, 1, 2]


def test_undeclared_label_value_shows_in_label_values(manifest):
    assert json.loads(manifest.loc["value_3"]["label_values"]) == [0, 1, 2, 3]


def test_nan_intensity_is_flagged_and_stats_skip_it(manifest):
    row = manifest.loc["nan_image"]
    assert not row["intensity_finite"]
    finite = image_array().ravel()[1:]
    assert row["intensity_mean"] == pytest.approx(float(finite.mean()))


def test_unreadable_file_gives_an_error_text_not_a_crash(manifest):
    row = manifest.loc["garbage"]
    assert row["image_exists"]
    assert row["image_error"] != ""
    assert row["label_error"] == ""
    assert pd.isna(row["image_shape"])


def test_mismatched_shapes_are_both_recorded(manifest):
    row = manifest.loc["mismatch"]
    assert json.loads(row["image_shape"]) == [6, 7, 5]
    assert json.loads(row["label_shape"]) == [6, 7, 4]


def test_identical_files_give_identical_content_hash(manifest):
    assert manifest.loc["twin_a", "content_hash"] == manifest.loc["twin_b", "content_hash"]
    assert manifest.loc["twin_a", "content_hash"] == manifest.loc["good", "content_hash"]
    assert manifest.loc["good", "content_hash"] != manifest.loc["float_label", "content_hash"]


@pytest.mark.skipif(not REAL.is_dir(), reason="shared Task04_Hippocampus copy not present")
def test_real_hippocampus_cases_are_described(tmp_path):
    ids = ["hippocampus_004", "hippocampus_006"]
    for case_id in ids:
        for folder in ("imagesTr", "labelsTr"):
            (tmp_path / folder).mkdir(exist_ok=True)
            shutil.copyfile(REAL / folder / f"{case_id}.nii.gz", tmp_path / folder / f"{case_id}.nii.gz")
    write_descriptor(tmp_path, ids)
    frame = build_manifest(read_msd_dataset(tmp_path))
    assert list(frame["case_id"]) == ids
    assert (frame["image_shape"] == frame["label_shape"]).all()
    assert frame["label_dtype"].eq("uint8").all() and frame["label_integral"].all()
    assert all(set(json.loads(v)) <= {0, 1, 2} for v in frame["label_values"])
