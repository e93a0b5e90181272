"""check_manifest on nnU-Net v2 deliveries (real great-expectations): a missing channel file
quarantines its case; what only dataset.json can get wrong (labels not consecutive from 0, a
numTraining that disagrees with the folders, a file_ending no file has) is judged once, as the
descriptor rules labels_consecutive, declared_case_count and file_ending_matches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import save_itk, write_nnunet_v2_dataset

from segflow.config import ValidateConfig
from segflow.data.manifest import build_manifest
from segflow.data.nnunet_v2 import read_nnunet_v2_dataset
from segflow.validation.contracts import DELIVERY, ContractResult, check_manifest

SHAPE = (8, 10, 6)
RULES = ValidateConfig(min_cases=2)
DESCRIPTOR_RULES = {"labels_consecutive", "declared_case_count", "file_ending_matches"}
CASES = [f"case_{i:02d}" for i in range(4)]


def write_v2(root: Path, values: tuple[int, ...] = (0, 1, 2), ending: str = ".nrrd", **descriptor) -> Path:
    """Four two-channel cases whose labels hold `values` (each foreground value in its own box)."""
    for folder in ("imagesTr", "labelsTr"):
        (root / folder).mkdir(parents=True)
    for seed, case in enumerate(CASES):
        rng = np.random.default_rng(seed)
        for channel in range(2):
            save_itk(root / "imagesTr" / f"{case}_{channel:04d}{ending}", rng.random(SHAPE, dtype=np.float32))
        label = np.zeros(SHAPE, np.uint8)
        for index, value in enumerate(values[1:]):
            label[1 + 3 * index: 3 + 3 * index, 2:6, 1:4] = value
        save_itk(root / "labelsTr" / f"{case}{ending}", label)
    fields = {"channel_names": {"0": "T2", "1": "ADC"}, "labels": {f"class {v}": v for v in values},
              "numTraining": len(CASES), "file_ending": ending}
    (root / "dataset.json").write_text(json.dumps(fields | descriptor))
    return root


def judge(root: Path) -> ContractResult:
    dataset = read_nnunet_v2_dataset(root)
    return check_manifest(build_manifest(dataset), sorted(dataset.labels), RULES)


def by_rule(result: ContractResult, rule: str) -> list:
    return [f for f in result.findings if f.rule == rule]


def test_a_clean_v2_delivery_keeps_every_case_and_has_no_descriptor_finding(tmp_path):
    result = judge(write_v2(tmp_path))
    assert result.passed and result.kept == CASES and not result.quarantined
    assert not [f for f in result.findings if f.rule in DESCRIPTOR_RULES]
    assert not [f for f in result.findings if f.severity == "error"]


def test_a_missing_channel_file_quarantines_that_case_and_names_the_file(tmp_path):
    root = write_v2(tmp_path)
    (root / "imagesTr" / "case_01_0001.nrrd").unlink()
    result = judge(root)
    assert list(result.quarantined) == ["case_01"] and result.kept == ["case_00", "case_02", "case_03"]
    (finding,) = [f for f in result.findings if f.case_id == "case_01"]
    assert (finding.rule, finding.severity, finding.file) == ("image_present", "error", "imagesTr/case_01_0001.nrrd")
    assert "imagesTr/case_01_0001.nrrd does not exist" in finding.message
    assert result.passed


def test_labels_not_consecutive_from_zero_reject_the_delivery(tmp_path):
    result = judge(write_v2(tmp_path, values=(0, 1, 3)))
    (finding,) = by_rule(result, "labels_consecutive")
    assert finding.severity == "error" and finding in result.dataset_errors and not result.passed
    assert finding.file == "dataset.json" and "[0, 1, 3]" in finding.message
    assert result.kept == CASES  # a descriptor error rejects the delivery, it quarantines no case


def test_a_wrong_num_training_is_a_warning_naming_both_counts_and_keeps_the_cases(tmp_path):
    result = judge(write_v2(tmp_path, numTraining=7))
    (finding,) = by_rule(result, "declared_case_count")
    assert finding.severity == "warning" and result.passed
    assert "numTraining is 7" in finding.message and "hold 4 case(s)" in finding.message
    assert result.kept == CASES and not result.quarantined


def test_a_num_training_that_is_not_given_is_no_finding(tmp_path):
    root = write_v2(tmp_path)
    descriptor = json.loads((root / "dataset.json").read_text())
    del descriptor["numTraining"]
    (root / "dataset.json").write_text(json.dumps(descriptor))
    assert not by_rule(judge(root), "declared_case_count")


def test_a_file_ending_no_file_has_rejects_the_delivery_and_lists_the_files_as_orphans(tmp_path):
    result = judge(write_v2(tmp_path, file_ending=".nii.gz"))
    (finding,) = by_rule(result, "file_ending_matches")
    assert finding.severity == "error" and finding in result.dataset_errors and not result.passed
    assert "file_ending .nii.gz" in finding.message
    orphans = {f.file for f in by_rule(result, "orphan_file")}
    assert {"imagesTr/case_00_0000.nrrd", "labelsTr/case_00.nrrd"} <= orphans
    assert result.kept == []


@pytest.fixture(scope="module")
def two_descriptor_defects(tmp_path_factory) -> ContractResult:
    """Labels {0, 1, 3} and numTraining 9 for four cases: judged once for the tests below."""
    return judge(write_v2(tmp_path_factory.mktemp("v2"), values=(0, 1, 3), numTraining=9))


def test_a_descriptor_finding_is_made_once_however_many_cases(two_descriptor_defects):
    result = two_descriptor_defects
    assert len(by_rule(result, "labels_consecutive")) == 1 and len(by_rule(result, "declared_case_count")) == 1


def test_descriptor_findings_are_about_the_delivery_not_a_case(two_descriptor_defects):
    result = two_descriptor_defects
    assert {f.case_id for f in result.findings if f.rule in DESCRIPTOR_RULES} == {DELIVERY}


def test_segflow_validate_reads_an_nnunet_v2_delivery_as_it_comes(tmp_path):
    """`segflow validate --data` detects the v2 layout; the ignore label need not appear anywhere."""
    from segflow.validation.delivery import validate_delivery

    write_nnunet_v2_dataset(tmp_path / "Dataset001", n_cases=6, ending=".nii.gz", n_test=0)
    verdict = validate_delivery(tmp_path / "Dataset001", tmp_path / "report.json", min_cases=4)
    assert verdict.exit_code == 0, verdict.summary
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["n_kept"] == 6
