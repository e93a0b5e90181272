"""build_manifest: one row per case recording what validation judges; a bad case never crashes it.
Files are sniffed before they are parsed; channels, 2D files and refused paths are described too."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import save_nifti

from segflow.data.formats import format_from_name, sniff_bytes
from segflow.data.manifest import MANIFEST_COLUMNS, build_manifest
from segflow.data.msd import CaseFiles, MsdDataset, read_msd_dataset

REAL = Path("/work/shared/datasets/Task04_Hippocampus")
SHAPE = (6, 7, 5)


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


# ---------------------------------------------------------------- formats, channels, 2D files

@pytest.mark.parametrize(
    ("head", "fmt"),
    [(b"\x1f\x8b\x08\x00", "gzip"), (b"\x89PNG\r\n\x1a\n rest", "png"), (b"II*\x00rest", "tiff"),
     (b"MM\x00*rest", "tiff"), (b"\x5c\x01" + b"\x00" * 342 + b"n+1\x00", "nifti"), (b"<html>", "unknown"),
     (b"", None)],
)
def test_sniffing_reads_the_signature_not_the_name(head, fmt):
    assert sniff_bytes(head) == fmt


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("a.nii.gz", "gzip"), ("A.NII", "nifti"), ("a.png", "png"), ("a.tif", "tiff"), ("a.tiff", "tiff"),
     ("a.mha", "metaimage"), ("a.nrrd", "nrrd"), ("a.bmp", "bmp"), ("a.jpg", None)],
)
def test_file_names_promise_a_format(name, fmt):
    assert format_from_name(name) == fmt


def dataset_of(root: Path, *cases: CaseFiles, modality: dict | None = None) -> MsdDataset:
    return MsdDataset(root, "Toy", {0: "bg", 1: "a", 2: "b"}, modality or {}, tuple(cases))


def test_empty_and_mislabelled_files_are_recorded_and_never_parsed(tmp_path):
    write_case(tmp_path, "empty", b"", label_array())
    write_case(tmp_path, "png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, label_array())
    cases = [CaseFiles(c, f"imagesTr/{c}.nii.gz", f"labelsTr/{c}.nii.gz", True) for c in ("empty", "png")]
    rows = build_manifest(dataset_of(tmp_path, *cases)).set_index("case_id")
    assert rows.loc["empty", "image_bytes"] == 0 and pd.isna(rows.loc["empty", "image_format"])
    assert (rows.loc["png", "image_format"], rows.loc["png", "image_format_expected"]) == ("png", "gzip")
    for case_id in ("empty", "png"):
        assert rows.loc[case_id, "image_exists"] and rows.loc[case_id, "image_error"] == ""
        assert pd.isna(rows.loc[case_id, "image_shape"])  # not parsed: no cascade of read errors
        assert json.loads(rows.loc[case_id, "label_shape"]) == list(SHAPE)


def test_schema_is_complete_even_when_nothing_could_be_read(tmp_path):
    frame = build_manifest(dataset_of(tmp_path, CaseFiles("gone", "imagesTr/gone.nii.gz", None, True)))
    assert list(frame.columns) == MANIFEST_COLUMNS
    assert not frame.loc[0, "image_exists"] and not frame.loc[0, "label_exists"]


def test_4d_nifti_is_one_image_with_channels_last(tmp_path):
    save_nifti(tmp_path / "imagesTr/brats.nii.gz", np.stack([image_array(), image_array() * 2], axis=-1))
    save_nifti(tmp_path / "labelsTr/brats.nii.gz", label_array())
    case = CaseFiles("brats", "imagesTr/brats.nii.gz", "labelsTr/brats.nii.gz", True)
    row = build_manifest(dataset_of(tmp_path, case, modality={0: "FLAIR", 1: "T1"})).iloc[0]
    assert json.loads(row["image_shape"]) == list(SHAPE) == json.loads(row["label_shape"])
    assert row["n_channels"] == 2 and row["expected_channels"] == 2
    assert json.loads(row["image_spacing"]) == [1.0, 1.0, 1.0]
    assert row["intensity_mean"] == pytest.approx(float(image_array().mean() * 1.5))


def test_channel_files_are_listed_and_described_together(tmp_path):
    for index in range(2):
        save_nifti(tmp_path / f"imagesTr/x_{index:04d}.nii.gz", image_array())
    save_nifti(tmp_path / "labelsTr/x.nii.gz", label_array())
    channels = ("imagesTr/x_0000.nii.gz", "imagesTr/x_0001.nii.gz")
    row = build_manifest(dataset_of(tmp_path, CaseFiles("x", channels[0], "labelsTr/x.nii.gz", True, channels))).iloc[0]
    assert row["image"] == channels[0] and json.loads(row["image_channels"]) == list(channels)
    assert row["n_channels"] == 2
    assert json.loads(row["image_channel_shapes"]) == [list(SHAPE), list(SHAPE)]


def test_a_missing_channel_file_is_the_file_the_row_names(tmp_path):
    save_nifti(tmp_path / "imagesTr/x_0000.nii.gz", image_array())
    channels = ("imagesTr/x_0000.nii.gz", "imagesTr/x_0001.nii.gz")
    row = build_manifest(dataset_of(tmp_path, CaseFiles("x", channels[0], None, True, channels))).iloc[0]
    assert row["image_file"] == "imagesTr/x_0001.nii.gz" and not row["image_exists"]


def test_paths_outside_the_root_are_never_looked_at(tmp_path):
    save_nifti(tmp_path / "secret.nii.gz", image_array())
    root = tmp_path / "delivery"
    root.mkdir()
    row = build_manifest(dataset_of(root, CaseFiles("x", "../secret.nii.gz", None, True))).iloc[0]
    assert not row["paths_confined"] and row["unsafe_paths"] == "../secret.nii.gz"
    assert pd.isna(row["image_exists"]) and pd.isna(row["image_bytes"]) and pd.isna(row["image_shape"])


def test_png_and_tif_pairs_are_described_in_2d(tmp_path):
    import cv2

    (tmp_path / "img").mkdir()
    (tmp_path / "msk").mkdir()
    image = np.arange(48, dtype=np.uint16).reshape(6, 8) * 100
    mask = np.zeros((6, 8), np.uint8)
    mask[2:4, 2:5] = 255
    cv2.imwrite(str(tmp_path / "img/a.tif"), image)
    cv2.imwrite(str(tmp_path / "msk/a.png"), mask)
    row = build_manifest(dataset_of(tmp_path, CaseFiles("a", "img/a.tif", "msk/a.png", True))).iloc[0]
    assert (row["image_format"], row["label_format"]) == ("tiff", "png")
    assert json.loads(row["image_shape"]) == [6, 8] == json.loads(row["label_shape"])
    assert json.loads(row["image_spacing"]) == [1.0, 1.0] and row["n_channels"] == 1
    assert row["image_dtype"] == "uint16" and row["intensity_p50"] == pytest.approx(np.median(image))
    assert json.loads(row["label_values"]) == [0, 255] and json.loads(row["label_voxels"]) == {"0": 42, "255": 6}


def test_rgb_png_counts_three_channels_over_a_2d_grid(tmp_path):
    import cv2

    (tmp_path / "img").mkdir()
    cv2.imwrite(str(tmp_path / "img/rgb.png"), np.zeros((5, 7, 3), np.uint8))
    row = build_manifest(dataset_of(tmp_path, CaseFiles("rgb", "img/rgb.png", None, True))).iloc[0]
    assert json.loads(row["image_shape"]) == [5, 7] and row["n_channels"] == 3


def test_read_errors_name_files_relative_to_the_root(tmp_path):
    write_case(tmp_path, "bad", b"\x1f\x8b not a deflate stream", None)
    row = build_manifest(dataset_of(tmp_path, CaseFiles("bad", "imagesTr/bad.nii.gz", None, True))).iloc[0]
    assert row["image_error"] and str(tmp_path) not in row["image_error"]


@pytest.fixture
def opened(monkeypatch) -> list[Path]:
    """Every file the manifest sniffs, hashes or decodes, in order."""
    from segflow.data import manifest as manifest_module

    seen: list[Path] = []
    for name in ("sniff_format", "_raw_digest", "read_image"):
        original = getattr(manifest_module, name)
        monkeypatch.setattr(manifest_module, name, lambda path, _f=original: (seen.append(Path(path)), _f(path))[1])
    return seen


@pytest.mark.parametrize("target", ["outside_file", "/etc/passwd"])
def test_a_link_leaving_the_root_is_refused_before_its_first_bytes_are_read(tmp_path, opened, target):
    save_nifti(tmp_path / "outside_file", image_array())
    root = tmp_path / "delivery"
    (root / "imagesTr").mkdir(parents=True)
    (root / "imagesTr" / "x.nii.gz").symlink_to(tmp_path / target if target == "outside_file" else target)
    row = build_manifest(dataset_of(root, CaseFiles("x", "imagesTr/x.nii.gz", None, True))).iloc[0]
    assert not row["paths_confined"] and row["unsafe_paths"] == "imagesTr/x.nii.gz"
    reason = row["unsafe_reason"]
    assert "imagesTr/x.nii.gz is a link to" in reason and "outside the dataset folder" in reason
    assert pd.isna(row["image_exists"]) and pd.isna(row["image_bytes"]) and pd.isna(row["image_format"])
    assert opened == []


def test_a_loop_of_links_is_a_missing_file_never_opened(tmp_path, opened):
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "imagesTr" / "x.nii.gz").symlink_to("y.nii.gz")
    (tmp_path / "imagesTr" / "y.nii.gz").symlink_to("x.nii.gz")
    row = build_manifest(dataset_of(tmp_path, CaseFiles("x", "imagesTr/x.nii.gz", None, True))).iloc[0]
    assert row["paths_confined"] and not row["image_exists"] and opened == []


def test_links_inside_the_root_and_into_an_allowed_cache_are_read(tmp_path):
    root, cache = tmp_path / "delivery", tmp_path / ".dvc" / "cache"
    save_nifti(root / "store" / "a.nii.gz", image_array())
    save_nifti(cache / "ab" / "cdef.nii.gz", image_array())
    (cache / "ab" / "cdef.nii.gz").rename(cache / "ab" / "cdef")  # DVC names cache files by hash alone
    (root / "imagesTr").mkdir()
    (root / "imagesTr" / "a.nii.gz").symlink_to("../store/a.nii.gz")
    (root / "imagesTr" / "b.nii.gz").symlink_to(cache / "ab" / "cdef")
    cases = [CaseFiles("a", "imagesTr/a.nii.gz", None, True), CaseFiles("b", "imagesTr/b.nii.gz", None, True)]
    rows = build_manifest(dataset_of(root, *cases), link_roots=(cache,)).set_index("case_id")
    assert rows["paths_confined"].all() and (rows["image_format"] == "gzip").all()
    assert json.loads(rows.loc["b", "image_shape"]) == list(SHAPE)
    assert not build_manifest(dataset_of(root, *cases)).set_index("case_id").loc["b", "paths_confined"]
