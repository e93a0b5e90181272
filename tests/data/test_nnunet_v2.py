"""read_nnunet_v2_dataset: cases from imagesTr/labelsTr named the nnU-Net v2 way, orphans for every
file that breaks the naming, labels and the ignore label from dataset.json, the optional `dataset`
mapping, and a clear LayoutError for what cannot be read (regions, duplicate or misplaced values,
missing keys)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import V2_LABELS, write_nnunet_v2_dataset

from segflow.data.msd import LayoutError
from segflow.data.nnunet_v2 import read_nnunet_v2_dataset

LABELS = {"background": 0, "a": 1, "b": 2}


def make_v2(root: Path, cases: list[str], ending: str = ".nrrd", n_channels: int = 2, **descriptor) -> Path:
    """dataset.json plus content-free channel and label files (the reader never opens them)."""
    for folder in ("imagesTr", "labelsTr"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for case in cases:
        for channel in range(n_channels):
            (root / "imagesTr" / f"{case}_{channel:04d}{ending}").write_bytes(b"x")
        (root / "labelsTr" / f"{case}{ending}").write_bytes(b"x")
    fields = {"channel_names": {str(i): f"ch{i}" for i in range(n_channels)}, "labels": LABELS,
              "numTraining": len(cases), "file_ending": ending}
    (root / "dataset.json").write_text(json.dumps(fields | descriptor))
    return root


def by_id(dataset, listed: bool = True) -> dict:
    return {c.case_id: c for c in dataset.cases if c.listed is listed}


def test_a_generated_dataset_reads_with_its_cases_channels_labels_and_ignore_label(tmp_path):
    cases = write_nnunet_v2_dataset(tmp_path, n_cases=3, n_test=1)
    dataset = read_nnunet_v2_dataset(tmp_path)
    assert dataset.layout == "nnunetv2" and dataset.name == "TinyTwoChannel"
    assert [c.case_id for c in dataset.cases] == cases and all(c.listed for c in dataset.cases)
    first = dataset.cases[0]
    assert first.channels == (f"imagesTr/{cases[0]}_0000.nrrd", f"imagesTr/{cases[0]}_0001.nrrd")
    assert first.image == f"imagesTr/{cases[0]}_0000.nrrd" and first.label == f"labelsTr/{cases[0]}.nrrd"
    assert dataset.labels == {value: name for name, value in V2_LABELS.items()}
    assert dataset.ignore_label == 3
    assert dataset.class_labels == {0: "background", 1: "anterior", 2: "posterior"}
    assert dataset.modality == {0: "T2", 1: "CT"}
    assert dataset.facts["declared_cases"] == 3 and dataset.facts["labels_consecutive"]
    assert dataset.facts["file_ending"] == ".nrrd" and dataset.facts["file_ending_found"]


def test_imagests_cases_are_not_training_cases(tmp_path):
    write_nnunet_v2_dataset(tmp_path, n_cases=2, n_test=2)
    assert not any(c.case_id.startswith("test_") for c in read_nnunet_v2_dataset(tmp_path).cases)


def test_channels_are_listed_in_channel_order_whatever_the_count(tmp_path):
    make_v2(tmp_path, ["case_a"], n_channels=4)
    (case,) = read_nnunet_v2_dataset(tmp_path).cases
    assert case.channels == tuple(f"imagesTr/case_a_{i:04d}.nrrd" for i in range(4))


def test_files_with_another_ending_are_orphans(tmp_path):
    make_v2(tmp_path, ["case_a"])
    (tmp_path / "imagesTr" / "case_b_0000.nii.gz").write_bytes(b"x")
    (tmp_path / "labelsTr" / "case_b.nii.gz").write_bytes(b"x")
    dataset = read_nnunet_v2_dataset(tmp_path)
    assert list(by_id(dataset)) == ["case_a"]
    orphans = [(c.case_id, c.image, c.label) for c in dataset.cases if not c.listed]
    assert orphans == [("case_b_0000", "imagesTr/case_b_0000.nii.gz", None), ("case_b", None, "labelsTr/case_b.nii.gz")]


def test_an_image_without_a_channel_index_is_an_orphan(tmp_path):
    make_v2(tmp_path, ["case_a"])
    (tmp_path / "imagesTr" / "case_b.nrrd").write_bytes(b"x")
    orphans = by_id(read_nnunet_v2_dataset(tmp_path), listed=False)
    assert list(orphans) == ["case_b"] and orphans["case_b"].image == "imagesTr/case_b.nrrd"


def test_an_extra_channel_file_is_an_orphan_and_the_case_keeps_its_declared_channels(tmp_path):
    make_v2(tmp_path, ["case_a"])
    (tmp_path / "imagesTr" / "case_a_0002.nrrd").write_bytes(b"x")
    dataset = read_nnunet_v2_dataset(tmp_path)
    assert by_id(dataset)["case_a"].channels == ("imagesTr/case_a_0000.nrrd", "imagesTr/case_a_0001.nrrd")
    (orphan,) = [c for c in dataset.cases if not c.listed]
    assert (orphan.case_id, orphan.image, orphan.label) == ("case_a", "imagesTr/case_a_0002.nrrd", None)


def test_a_label_without_images_is_a_listed_case_whose_image_files_are_missing(tmp_path):
    make_v2(tmp_path, ["case_a"])
    (tmp_path / "labelsTr" / "case_b.nrrd").write_bytes(b"x")
    case = by_id(read_nnunet_v2_dataset(tmp_path))["case_b"]
    assert case.label == "labelsTr/case_b.nrrd"
    assert case.channels == ("imagesTr/case_b_0000.nrrd", "imagesTr/case_b_0001.nrrd")
    assert not any((tmp_path / rel).exists() for rel in case.channels)


def test_images_without_a_label_are_a_listed_case_whose_label_is_missing(tmp_path):
    make_v2(tmp_path, ["case_a"])
    (tmp_path / "labelsTr" / "case_a.nrrd").unlink()
    (case,) = read_nnunet_v2_dataset(tmp_path).cases
    assert case.listed and case.label == "labelsTr/case_a.nrrd" and not (tmp_path / case.label).exists()


def test_hidden_files_are_neither_cases_nor_orphans(tmp_path):
    make_v2(tmp_path, ["case_a"])
    (tmp_path / "imagesTr" / "._case_a_0000.nrrd").write_bytes(b"macOS resource fork")
    assert [c.case_id for c in read_nnunet_v2_dataset(tmp_path).cases] == ["case_a"]


def test_region_labels_without_their_class_order_are_refused(tmp_path):
    make_v2(tmp_path, ["case_a"], labels={"background": 0, "whole": [1, 2], "core": 2})
    with pytest.raises(LayoutError, match=r"region-based labels need 'regions_class_order'.*whole, core"):
        read_nnunet_v2_dataset(tmp_path)


def test_region_labels_become_regions_with_the_values_they_cover(tmp_path):
    make_v2(tmp_path, ["case_a"], labels={"background": 0, "whole": [1, 2], "core": 2, "ignore": 3})
    descriptor = json.loads((tmp_path / "dataset.json").read_text())
    (tmp_path / "dataset.json").write_text(json.dumps({**descriptor, "regions_class_order": [1, 2]}))

    dataset = read_nnunet_v2_dataset(tmp_path)

    assert dataset.regions.names == ("whole", "core") and dataset.regions.values == ((1, 2), (2,))
    assert dataset.regions.class_order == (1, 2) and dataset.ignore_label == 3
    assert sorted(dataset.labels) == [0, 1, 2, 3]  # what a mask may hold
    assert dataset.class_labels == {0: "background", 1: "whole", 2: "core"}  # one output per region


def test_an_ignore_label_that_is_not_the_highest_value_is_refused(tmp_path):
    make_v2(tmp_path, ["case_a"], labels={"background": 0, "ignore": 1, "a": 2})
    with pytest.raises(LayoutError, match=r"ignore label \(1\) must have the highest value"):
        read_nnunet_v2_dataset(tmp_path)


def test_two_labels_with_one_value_are_refused_naming_both(tmp_path):
    make_v2(tmp_path, ["case_a"], labels={"background": 0, "a": 1, "b": 1})
    with pytest.raises(LayoutError, match="'a' and 'b' both have the value 1"):
        read_nnunet_v2_dataset(tmp_path)


@pytest.mark.parametrize("value", ["1", 1.0, True, None])
def test_a_label_value_that_is_not_an_integer_is_refused(tmp_path, value):
    make_v2(tmp_path, ["case_a"], labels={"background": 0, "a": value})
    with pytest.raises(LayoutError, match="'a' must map to an integer"):
        read_nnunet_v2_dataset(tmp_path)


def test_missing_required_keys_are_named(tmp_path):
    make_v2(tmp_path, ["case_a"])
    descriptor = json.loads((tmp_path / "dataset.json").read_text())
    del descriptor["labels"], descriptor["file_ending"]
    (tmp_path / "dataset.json").write_text(json.dumps(descriptor))
    with pytest.raises(LayoutError, match="missing labels, file_ending"):
        read_nnunet_v2_dataset(tmp_path)


def test_channel_names_must_number_the_channels_from_zero(tmp_path):
    make_v2(tmp_path, ["case_a"], channel_names={"0": "T2", "2": "ADC"})
    with pytest.raises(LayoutError, match=r"'channel_names' must number the channels 0, 1, \.\.\.; got \[0, 2\]"):
        read_nnunet_v2_dataset(tmp_path)


@pytest.mark.parametrize("ending", ["nrrd", "", "/x.nrrd", 3])
def test_a_file_ending_that_is_no_ending_is_refused(tmp_path, ending):
    make_v2(tmp_path, ["case_a"])
    descriptor = json.loads((tmp_path / "dataset.json").read_text()) | {"file_ending": ending}
    (tmp_path / "dataset.json").write_text(json.dumps(descriptor))
    with pytest.raises(LayoutError, match="'file_ending' must be a file ending"):
        read_nnunet_v2_dataset(tmp_path)


def test_unreadable_json_is_a_layout_error_naming_the_file(tmp_path):
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(LayoutError, match="dataset.json: not readable JSON"):
        read_nnunet_v2_dataset(tmp_path)


def test_the_dataset_mapping_lists_the_files_instead_of_the_folders(tmp_path):
    make_v2(tmp_path, ["case_a", "case_b"], dataset={
        "first": {"images": ["./imagesTr/case_b_0000.nrrd", "imagesTr/case_b_0001.nrrd"],
                  "label": "labelsTr/case_b.nrrd"},
        "escape": {"images": ["../elsewhere_0000.nrrd", "imagesTr/case_a_0001.nrrd"], "label": "/abs/label.nrrd"},
    })
    dataset = read_nnunet_v2_dataset(tmp_path)
    cases = by_id(dataset)
    assert list(cases) == ["escape", "first"] and all(c.listed for c in dataset.cases)  # no orphans from the folders
    assert cases["first"].channels == ("imagesTr/case_b_0000.nrrd", "imagesTr/case_b_0001.nrrd")
    assert cases["first"].label == "labelsTr/case_b.nrrd"
    # paths leaving the dataset folder are kept as written, for the manifest to refuse and report
    assert cases["escape"].channels[0] == "../elsewhere_0000.nrrd" and cases["escape"].label == "/abs/label.nrrd"


@pytest.mark.parametrize("entry", [{"images": [], "label": "labelsTr/a.nrrd"}, {"images": ["imagesTr/a_0000.nrrd"]},
                                   ["imagesTr/a_0000.nrrd"]])
def test_a_dataset_entry_without_images_or_label_is_refused(tmp_path, entry):
    make_v2(tmp_path, [], dataset={"a": entry})
    with pytest.raises(LayoutError, match=r"dataset\['a'\] needs an 'images' list and a 'label' path"):
        read_nnunet_v2_dataset(tmp_path)


def test_non_consecutive_labels_and_a_wrong_count_are_facts_not_errors(tmp_path):
    make_v2(tmp_path, ["case_a"], labels={"background": 0, "a": 1, "b": 3}, numTraining=5)
    facts = read_nnunet_v2_dataset(tmp_path).facts
    assert not facts["labels_consecutive"] and facts["declared_label_values"] == "[0, 1, 3]"
    assert facts["declared_cases"] == 5


def test_a_file_ending_no_file_has_is_a_fact_and_every_file_an_orphan(tmp_path):
    make_v2(tmp_path, ["case_a"], file_ending=".nii.gz")
    dataset = read_nnunet_v2_dataset(tmp_path)
    assert not dataset.facts["file_ending_found"]
    assert dataset.cases and not any(c.listed for c in dataset.cases)
