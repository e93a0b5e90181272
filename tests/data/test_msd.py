"""read_msd_dataset: listed cases, orphan files on disk, unusable dataset.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from segflow.data.msd import LayoutError, case_id_from_path, confined_path, read_msd_dataset


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


def write_descriptor(root: Path, training: list[dict], modality: dict | None = None) -> None:
    descriptor = {"labels": {"0": "background", "1": "a"}, "training": training}
    if modality is not None:
        descriptor["modality"] = modality
    (root / "dataset.json").write_text(json.dumps(descriptor))


def touch(root: Path, *paths: str) -> None:
    for rel in paths:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")


def entry(case_id: str) -> dict:
    return {"image": f"./imagesTr/{case_id}.nii.gz", "label": f"./labelsTr/{case_id}.nii.gz"}


def test_nnunet_channel_files_replace_the_listed_name(tmp_path):
    """nnU-Net v1 lists `case.nii.gz` while the disk holds `case_0000`, `case_0001`."""
    touch(tmp_path, "imagesTr/la_003_0000.nii.gz", "imagesTr/la_003_0001.nii.gz", "labelsTr/la_003.nii.gz")
    write_descriptor(tmp_path, [entry("la_003")], modality={"0": "T2", "1": "ADC"})
    (case,) = read_msd_dataset(tmp_path).cases
    assert case.case_id == "la_003" and case.image == "imagesTr/la_003_0000.nii.gz"
    assert case.channels == ("imagesTr/la_003_0000.nii.gz", "imagesTr/la_003_0001.nii.gz")


def test_declared_modalities_fix_the_channel_count_so_a_missing_channel_is_named(tmp_path):
    touch(tmp_path, "imagesTr/x_0000.nii.gz", "imagesTr/x_0002.nii.gz", "labelsTr/x.nii.gz")
    write_descriptor(tmp_path, [entry("x")], modality={"0": "a", "1": "b", "2": "c"})
    (case,) = read_msd_dataset(tmp_path).cases
    assert case.channels == ("imagesTr/x_0000.nii.gz", "imagesTr/x_0001.nii.gz", "imagesTr/x_0002.nii.gz")


def test_without_modalities_the_contiguous_channel_files_are_used(tmp_path):
    touch(tmp_path, "imagesTr/x_0000.nii.gz", "imagesTr/x_0001.nii.gz", "imagesTr/x_0003.nii.gz", "labelsTr/x.nii.gz")
    write_descriptor(tmp_path, [entry("x")])
    cases = read_msd_dataset(tmp_path).cases
    assert cases[0].channels == ("imagesTr/x_0000.nii.gz", "imagesTr/x_0001.nii.gz")
    assert [(c.case_id, c.listed) for c in cases[1:]] == [("x_0003", False)]  # not part of the run: orphan


def test_an_existing_listed_file_wins_over_channel_files(tmp_path):
    touch(tmp_path, "imagesTr/x.nii.gz", "imagesTr/x_0000.nii.gz", "labelsTr/x.nii.gz")
    write_descriptor(tmp_path, [entry("x")])
    cases = read_msd_dataset(tmp_path).cases
    assert cases[0].channels == ("imagesTr/x.nii.gz",)
    assert [c.image for c in cases if not c.listed] == ["imagesTr/x_0000.nii.gz"]


@pytest.mark.parametrize(
    ("entry_path", "confined"),
    [("./imagesTr/a.nii.gz", "imagesTr/a.nii.gz"), ("imagesTr/../imagesTr/a.nii.gz", "imagesTr/a.nii.gz"),
     ("../a.nii.gz", None), ("./imagesTr/../../a.nii.gz", None), ("/etc/passwd", None),
     ("C:\\data\\a.nii.gz", None), ("..\\..\\a.nii.gz", None), ("..", None)],
)
def test_confined_path_refuses_anything_leaving_the_root(entry_path, confined):
    assert confined_path(entry_path) == confined


def test_entries_outside_the_root_are_kept_raw_and_never_resolved_to_channels(tmp_path):
    outside = tmp_path / "outside_0000.nii.gz"
    outside.write_bytes(b"x")
    root = tmp_path / "delivery"
    touch(root, "labelsTr/case_1.nii.gz")
    write_descriptor(root, [{"image": "../outside.nii.gz", "label": "./labelsTr/case_1.nii.gz"},
                            {"image": "./imagesTr/case_2.nii.gz", "label": "/abs/case_2.nii.gz"}])
    first, second = read_msd_dataset(root).cases
    assert (first.case_id, first.image, first.channels) == ("case_1", "../outside.nii.gz", ("../outside.nii.gz",))
    assert (second.case_id, second.label) == ("case_2", "/abs/case_2.nii.gz")


def test_entry_naming_no_path_gets_an_id_from_its_position(tmp_path):
    write_descriptor(tmp_path, [entry("a"), {"image": None}])
    assert [c.case_id for c in read_msd_dataset(tmp_path).cases] == ["a", "training[1]"]


def test_non_integer_label_keys_are_a_layout_error(tmp_path):
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"background": 0}, "training": []}))
    with pytest.raises(LayoutError, match="integers"):
        read_msd_dataset(tmp_path)


def test_a_dataset_json_linked_from_outside_is_not_read(tmp_path):
    outside = make_layout(tmp_path / "elsewhere", ["a"], ["a"], ["a"])
    root = tmp_path / "delivery"
    root.mkdir()
    (root / "dataset.json").symlink_to(outside / "dataset.json")
    with pytest.raises(LayoutError, match="a link to .*elsewhere/dataset.json, outside the dataset folder"):
        read_msd_dataset(root)


def test_a_dataset_json_linked_from_inside_the_delivery_is_read(tmp_path):
    root = make_layout(tmp_path, ["a"], ["a"], ["a"])
    (root / "dataset.json").rename(root / "descriptor.json")
    (root / "dataset.json").symlink_to("descriptor.json")
    assert [c.case_id for c in read_msd_dataset(root).cases] == ["a"]
