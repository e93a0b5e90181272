"""read_msd_dataset: listed cases, orphan files on disk, unusable dataset.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from segflow.data.msd import LayoutError, case_id_from_path, read_msd_dataset


def make_layout(root: Path, listed: list[str], images: list[str], labels: list[str], extra: dict | None = None) -> Path:
    """dataset.json listing `listed` case ids, plus (content-free) files for `images` / `labels`."""
    for folder, ids in (("imagesTr", images), ("labelsTr", labels)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for case_id in ids:
            (root / folder / f"{case_id}.nii.gz").write_bytes(b"x")
    descriptor = {
        "name": "Toy",
        "labels": {"0": "background", "1": "a", "2": "b"},
        "modality": {"0": "MRI"},
        "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in listed],
        **(extra or {}),
    }
    (root / "dataset.json").write_text(json.dumps(descriptor))
    return root


def test_listed_cases_keep_dataset_json_order_and_relative_paths(tmp_path):
    root = make_layout(tmp_path, ["case_002", "case_001"], ["case_002", "case_001"], ["case_002", "case_001"])
    dataset = read_msd_dataset(root)
    assert [c.case_id for c in dataset.cases] == ["case_002", "case_001"]
    first = dataset.cases[0]
    assert first.image == "imagesTr/case_002.nii.gz" and first.label == "labelsTr/case_002.nii.gz"
    assert all(c.listed for c in dataset.cases)
    assert dataset.name == "Toy"
    assert dataset.labels == {0: "background", 1: "a", 2: "b"}
    assert dataset.modality == {0: "MRI"}


def test_listed_case_keeps_paths_even_when_files_are_missing(tmp_path):
    root = make_layout(tmp_path, ["case_001"], [], [])
    (case,) = read_msd_dataset(root).cases
    assert case.case_id == "case_001" and case.listed
    assert case.image == "imagesTr/case_001.nii.gz"


def test_unlisted_files_on_disk_become_orphans_after_listed_cases(tmp_path):
    root = make_layout(tmp_path, ["case_001"], ["case_001", "case_009"], ["case_001", "case_007"])
    (root / "imagesTr" / "notes.txt").write_text("not an image")
    (root / "labelsTr" / "._case_001.nii.gz").write_bytes(b"macOS resource fork")
    cases = read_msd_dataset(root).cases
    assert [(c.case_id, c.listed) for c in cases] == [("case_001", True), ("case_009", False), ("case_007", False)]
    orphan_image, orphan_label = cases[1], cases[2]
    assert (orphan_image.image, orphan_image.label) == ("imagesTr/case_009.nii.gz", None)
    assert (orphan_label.image, orphan_label.label) == (None, "labelsTr/case_007.nii.gz")


def test_missing_dataset_json_is_a_layout_error(tmp_path):
    (tmp_path / "imagesTr").mkdir()
    with pytest.raises(LayoutError, match="dataset.json"):
        read_msd_dataset(tmp_path)


def test_unparseable_dataset_json_is_a_layout_error(tmp_path):
    (tmp_path / "dataset.json").write_text('{"training": [')
    with pytest.raises(LayoutError, match="not readable JSON"):
        read_msd_dataset(tmp_path)


def test_dataset_json_without_training_list_is_a_layout_error(tmp_path):
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"0": "background"}}))
    with pytest.raises(LayoutError, match="'training' list"):
        read_msd_dataset(tmp_path)


@pytest.mark.parametrize(
    ("path", "case_id"),
    [("./imagesTr/hippocampus_004.nii.gz", "hippocampus_004"), ("labelsTr/x_1.nii", "x_1")],
)
def test_case_id_strips_folder_and_nifti_suffix(path, case_id):
    assert case_id_from_path(path) == case_id


def test_dataset_json_that_is_not_an_object_is_a_layout_error(tmp_path):
    (tmp_path / "dataset.json").write_text("[1, 2]")
    with pytest.raises(LayoutError):
        read_msd_dataset(tmp_path)
