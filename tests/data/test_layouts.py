"""detect_layout / read_layout: which reader a dataset folder needs (MSD, nnU-Net v2, 2D folders),
and a LayoutError that says what was looked for, and where, when none fits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from segflow.data.layouts import detect_layout, read_layout
from segflow.data.msd import LayoutError

MSD = {"name": "Toy", "labels": {"0": "background", "1": "a"}, "modality": {"0": "MRI"},
       "training": [{"image": "./imagesTr/case.nii.gz", "label": "./labelsTr/case.nii.gz"}]}
V2 = {"channel_names": {"0": "T2"}, "labels": {"background": 0, "a": 1}, "numTraining": 1, "file_ending": ".nrrd"}


def descriptor(root: Path, content: object) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(content if isinstance(content, str) else json.dumps(content))
    return root


def test_a_training_list_is_msd(tmp_path):
    assert detect_layout(descriptor(tmp_path, MSD)) == "msd"


def test_channel_names_and_a_file_ending_are_nnunet_v2(tmp_path):
    assert detect_layout(descriptor(tmp_path, V2)) == "nnunetv2"


def test_a_training_list_wins_over_channel_names(tmp_path):
    assert detect_layout(descriptor(tmp_path, MSD | {"channel_names": {"0": "MRI"}})) == "msd"


def test_an_image_folder_without_dataset_json_is_folders2d(tmp_path):
    (tmp_path / "train" / "image").mkdir(parents=True)
    assert detect_layout(tmp_path) == "folders2d"
    (tmp_path / "slices").mkdir()
    assert detect_layout(tmp_path, image_dir="slices") == "folders2d"


def test_a_dataset_json_wins_over_an_image_folder(tmp_path):
    (tmp_path / "train" / "image").mkdir(parents=True)
    assert detect_layout(descriptor(tmp_path, V2)) == "nnunetv2"


@pytest.mark.parametrize("content", ["{not json", b"\xff\xfe\x00binary"])
def test_unreadable_json_is_a_layout_error_naming_the_file(tmp_path, content):
    tmp_path.joinpath("dataset.json").write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(LayoutError, match=r"dataset\.json: not readable JSON"):
        detect_layout(tmp_path)


def test_a_dataset_json_of_neither_form_names_both_forms_and_its_keys(tmp_path):
    with pytest.raises(LayoutError) as raised:
        detect_layout(descriptor(tmp_path, {"name": "x", "labels": {"0": "bg"}}))
    message = str(raised.value)
    assert "neither MSD" in message and "'training'" in message and "'channel_names'" in message
    assert "['labels', 'name']" in message


def test_a_dataset_json_that_is_not_an_object_is_named_by_its_type(tmp_path):
    with pytest.raises(LayoutError, match="found list"):
        detect_layout(descriptor(tmp_path, [1, 2]))


def test_an_empty_folder_names_dataset_json_and_the_image_folder(tmp_path):
    with pytest.raises(LayoutError) as raised:
        detect_layout(tmp_path, image_dir="train/pictures")
    message = str(raised.value)
    assert str(tmp_path) in message and "dataset.json" in message and "train/pictures" in message


def test_a_missing_folder_is_named(tmp_path):
    with pytest.raises(LayoutError, match="no such dataset folder"):
        detect_layout(tmp_path / "absent")


def test_read_layout_auto_reads_a_v2_dataset_with_the_v2_reader(tmp_path):
    dataset = read_layout(descriptor(tmp_path, V2), "auto")
    assert dataset.layout == "nnunetv2" and dataset.modality == {0: "T2"}


def test_read_layout_auto_reads_an_msd_dataset_with_the_msd_reader(tmp_path):
    dataset = read_layout(descriptor(tmp_path, MSD), "auto")
    assert dataset.layout == "msd" and [c.case_id for c in dataset.cases] == ["case"]


def test_read_layout_refuses_an_unknown_layout_naming_the_choices(tmp_path):
    with pytest.raises(LayoutError, match="unknown layout 'nnunetv3'; choose auto or one of msd, nnunetv2, folders2d"):
        read_layout(tmp_path, "nnunetv3")
