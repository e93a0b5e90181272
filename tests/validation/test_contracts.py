"""check_manifest (real great-expectations): each defect gives its own named finding, good cases are kept."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import save_nifti

from segflow.config import ValidateConfig
from segflow.data.manifest import build_manifest
from segflow.data.msd import read_msd_dataset
from segflow.validation.contracts import (
    MIN_OUTLIER_POPULATION,
    affine_difference,
    channels_agree,
    check_manifest,
    label_values_regex,
    relative_difference,
    robust_z,
)

SHAPE = (6, 7, 5)
DECLARED = [0, 1, 2]
MAX_DIM = 16
GOOD = [f"good_{i:02d}" for i in range(10)]


def image(shape=SHAPE, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def label(shape=SHAPE, dtype=np.uint8) -> np.ndarray:
    array = np.zeros(shape, dtype=dtype)
    array[1:3, 1:3, 1:3] = 1
    array[3:5, 3:5, 2:4] = 2
    return array


def write_case(root: Path, case_id: str, img, lbl, label_spacing=(1.0, 1.0, 1.0)) -> None:
    """Write a case; None leaves the file out, bytes are written raw."""
    for folder, content, spacing in (("imagesTr", img, (1.0, 1.0, 1.0)), ("labelsTr", lbl, label_spacing)):
        path = root / folder / f"{case_id}.nii.gz"
        if isinstance(content, bytes):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        elif content is not None:
            save_nifti(path, content, spacing)


def write_descriptor(root: Path, case_ids: list[str]) -> None:
    training = [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in case_ids]
    labels = {str(v): f"class {v}" for v in DECLARED}
    (root / "dataset.json").write_text(json.dumps({"name": "Toy", "labels": labels, "training": training}))


def defect_cases() -> dict[str, tuple]:
    nan_image = image()
    nan_image[0, 0, 0] = np.nan
    undeclared = label()
    undeclared[0, 0, 0] = 3
    fractional = label(dtype=np.float32)
    fractional[0, 0, 0] = 0.5
    return {
        "missing_image": (None, label()),
        "missing_label": (image(), None),
        "unreadable": (b"\x1f\x8b gzip signature, then garbage", label()),
        "shape_mismatch": (image(), label((6, 7, 4))),
        "spacing_mismatch": (image(), label(), (1.0, 1.0, 2.0)),
        "nan_image": (nan_image, label()),
        "undeclared_value": (image(), undeclared),
        "float_label": (image(), label(dtype=np.float32)),
        "fractional_label": (image(), fractional),
        "empty_foreground": (image(), np.zeros(SHAPE, np.uint8)),
        "too_large": (image((MAX_DIM + 4, 7, 5)), label((MAX_DIM + 4, 7, 5))),
    }


# case -> (rule, severity) it must produce; warnings-only cases must stay kept
EXPECTED = {
    "missing_image": ("image_present", "error"),
    "missing_label": ("label_present", "error"),
    "unreadable": ("image_readable", "error"),
    "shape_mismatch": ("shapes_match", "error"),
    "spacing_mismatch": ("spacing_match", "error"),
    "nan_image": ("intensities_finite", "error"),
    "undeclared_value": ("label_values_declared", "error"),
    "float_label": ("label_integer_dtype", "warning"),
    "fractional_label": ("label_integral", "error"),
    "empty_foreground": ("foreground_present", "warning"),
    "too_large": ("dimensions_sane", "error"),
    "orphan": ("orphan_file", "warning"),
}


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    root = tmp_path_factory.mktemp("delivery")
    for i, case_id in enumerate(GOOD):
        write_case(root, case_id, image(seed=i), label())
    defects = defect_cases()
    for case_id, spec in defects.items():
        write_case(root, case_id, *spec)
    save_nifti(root / "imagesTr" / "orphan.nii.gz", image())
    write_descriptor(root, GOOD + list(defects))
    manifest = build_manifest(read_msd_dataset(root))
    return check_manifest(manifest, DECLARED, ValidateConfig(max_dim=MAX_DIM, min_cases=10))


@pytest.fixture(scope="module")
def bad_delivery(tmp_path_factory):
    """Three good cases, one listed twice, against min_cases=10."""
    root = tmp_path_factory.mktemp("bad_delivery")
    ids = GOOD[:3]
    for i, case_id in enumerate(ids):
        write_case(root, case_id, image(seed=i), label())
    write_descriptor(root, [*ids, ids[0]])
    manifest = build_manifest(read_msd_dataset(root))
    return check_manifest(manifest, DECLARED, ValidateConfig(max_dim=MAX_DIM, min_cases=10))


def rules_of(result, case_id: str) -> set[tuple[str, str]]:
    return {(f.rule, f.severity) for f in result.findings if f.case_id == case_id}


@pytest.mark.parametrize("case_id", sorted(EXPECTED))
def test_each_defect_gives_its_named_finding(result, case_id):
    assert EXPECTED[case_id] in rules_of(result, case_id)


def test_findings_carry_file_and_readable_message(result):
    (finding,) = [f for f in result.findings if f.case_id == "shape_mismatch"]
    assert finding.file == "labelsTr/shape_mismatch.nii.gz"
    assert "[6, 7, 5]" in finding.message and "[6, 7, 4]" in finding.message
    (orphan,) = [f for f in result.findings if f.case_id == "orphan"]
    assert orphan.file == "imagesTr/orphan.nii.gz"


def test_single_defect_cases_give_no_unrelated_error(result):
    """A case with one defect is quarantined for that defect only (no cascade of errors)."""
    for case_id, (rule, severity) in EXPECTED.items():
        if case_id == "fractional_label":  # non-integral values are also undeclared values
            continue
        errors = {r for r, s in rules_of(result, case_id) if s == "error"}
        assert errors == ({rule} if severity == "error" else set()), case_id


def test_good_cases_give_no_finding_and_are_kept(result):
    assert not [f for f in result.findings if f.case_id in GOOD]
    assert set(GOOD) <= set(result.kept)


def test_error_cases_are_quarantined_and_warning_cases_kept(result):
    errors = {c for c, (_, s) in EXPECTED.items() if s == "error"}
    assert set(result.quarantined) == errors
    assert set(result.kept) == set(GOOD) | {"float_label", "empty_foreground"}
    assert "orphan" not in result.kept
    assert any(reason.startswith("dimensions_sane:") for reason in result.quarantined["too_large"])


def test_delivery_with_enough_good_cases_passes(result):
    assert result.passed
    assert result.dataset_errors == []
    report = result.to_report()
    assert report["n_kept"] == len(result.kept) and report["n_quarantined"] == len(EXPECTED) - 3
    assert report["rule_counts"]["orphan_file"] == 1


def test_non_integral_label_is_not_called_whole_numbers(result):
    messages = [f.message for f in result.findings if f.case_id == "fractional_label"]
    assert not any("whole numbers" in m for m in messages)


def test_duplicate_case_id_is_a_dataset_error(bad_delivery):
    duplicate = [f for f in bad_delivery.dataset_errors if f.rule == "unique_case_ids"]
    assert [f.case_id for f in duplicate] == [GOOD[0]]
    assert duplicate[0].severity == "error"
    assert not bad_delivery.passed


def test_too_few_usable_cases_is_a_dataset_error(bad_delivery):
    (too_few,) = [f for f in bad_delivery.dataset_errors if f.rule == "min_cases"]
    assert "at least 10" in too_few.message
    assert "only 2 usable" in too_few.message  # the duplicated case is not usable: two remain
    assert bad_delivery.to_report()["passed"] is False


def test_label_values_regex_accepts_only_declared_values():
    import re

    pattern = re.compile(label_values_regex([2, 0, 1]))
    assert pattern.match("[0, 1, 2]") and pattern.match("[0]")
    assert not pattern.match("[0, 1, 2, 3]")
    assert not pattern.match("[0.0, 0.5]")
    assert not pattern.match("[12]")


# ---------------------------------------------------------------- features and knobs

def test_relative_difference_is_scale_free_and_unknown_when_incomparable():
    assert relative_difference("[1.0, 2.0]", "[1.0, 2.002]") == pytest.approx(0.001, rel=1e-3)
    assert np.isnan(relative_difference("[1.0, 1.0]", "[1.0, 1.0, 1.0]"))
    assert np.isnan(relative_difference(None, "[1.0]"))


def test_affine_difference_measures_origin_in_voxels_and_ignores_spacing():
    eye = np.eye(4)
    shifted, scaled, rotated = eye.copy(), np.diag([2.0, 2.0, 2.0, 1.0]), eye[[1, 0, 2, 3]]
    shifted[0, 3] = 1.0
    as_json = lambda m: json.dumps(m.tolist())  # noqa: E731
    assert affine_difference(as_json(eye), as_json(shifted), "[2.0, 2.0, 2.0]") == pytest.approx(0.5)
    assert affine_difference(as_json(eye), as_json(scaled), "[1.0, 1.0, 1.0]") == 0.0
    assert affine_difference(as_json(eye), as_json(rotated), "[1.0, 1.0, 1.0]") == pytest.approx(1.0)


def test_channels_agree_within_the_spacing_tolerance():
    assert channels_agree("[[4, 5], [4, 5]]", "[[1.0, 1.0], [1.0, 1.0005]]", 1e-3)
    assert not channels_agree("[[4, 5], [4, 5]]", "[[1.0, 1.0], [1.0, 1.1]]", 1e-3)
    assert not channels_agree("[[4, 5], [4, 6]]", "[[1.0, 1.0], [1.0, 1.0]]", 1e-3)


def test_robust_z_flags_the_far_value_only():
    values = np.array([[10.0]] * 12 + [[10.2], [9.9], [40.0]])
    z, median = robust_z(values)
    assert median.tolist() == [10.0]
    assert z[-1] > 5 and (z[:-1] < 5).all()


def test_robust_z_needs_a_population():
    z, _ = robust_z(np.ones((MIN_OUTLIER_POPULATION - 1, 2)))
    assert np.isnan(z).all()


@pytest.fixture(scope="module")
def near_spacing_manifest(tmp_path_factory):
    """Good cases plus one whose label spacing differs by 0.05 % (within 1e-3, not 1e-4)."""
    root = tmp_path_factory.mktemp("tolerance")
    for i, case_id in enumerate(GOOD[:3]):
        write_case(root, case_id, image(seed=i), label())
    write_case(root, "near", image(seed=9), label(), label_spacing=(1.0, 1.0, 1.0005))
    write_descriptor(root, [*GOOD[:3], "near"])
    return build_manifest(read_msd_dataset(root))


def test_spacing_tolerance_decides_what_counts_as_equal(near_spacing_manifest):
    loose = check_manifest(near_spacing_manifest, DECLARED, ValidateConfig(max_dim=MAX_DIM, min_cases=1))
    strict = check_manifest(near_spacing_manifest, DECLARED, ValidateConfig(spacing_tolerance=1e-4, max_dim=MAX_DIM, min_cases=1))
    assert "near" in loose.kept
    assert [f.rule for f in strict.findings if f.case_id == "near"] == ["spacing_match"]


def test_foreground_labels_choose_what_counts_as_foreground(near_spacing_manifest):
    result = check_manifest(near_spacing_manifest, DECLARED, ValidateConfig(foreground_labels=[0], max_dim=MAX_DIM, min_cases=1))
    assert not [f for f in result.findings if f.rule == "foreground_present"]
    absent = check_manifest(near_spacing_manifest, [*DECLARED, 5],
                            ValidateConfig(foreground_labels=[5], max_dim=MAX_DIM, min_cases=1))
    assert [f.severity for f in absent.findings if f.rule == "declared_label_present"] == ["error"]


def test_an_empty_delivery_is_reported_not_crashed(tmp_path):
    write_descriptor(tmp_path, [])
    result = check_manifest(build_manifest(read_msd_dataset(tmp_path)), DECLARED, ValidateConfig(max_dim=MAX_DIM, min_cases=1))
    assert not result.passed and result.kept == []
    assert "min_cases" in {f.rule for f in result.dataset_errors}


def test_gx_results_are_returned_for_data_docs(result):
    """One GX suite per rule set and severity (an MSD delivery has no descriptor rules)."""
    assert [r.suite_name for r in result.gx_results] == [
        "segflow_case_errors", "segflow_case_warnings", "segflow_orphan_warnings", "segflow_population_errors",
        "segflow_population_warnings", "segflow_dataset_errors", "segflow_dataset_warnings"]


def test_the_report_reads_back_numeric_case_ids_as_the_manifest_gives_them(tmp_path):
    """A 2D folder delivery names cases by numeric stems, which the manifest CSV reads as ints."""
    from segflow.files import write_json
    from segflow.validation.report import ValidationReport

    write_json(tmp_path / "report.json", {"passed": True, "n_kept": 2, "n_quarantined": 1, "kept": [0, "case_1"],
                                          "quarantined": {"2": ["label_present"]}, "decision": {"stop": False}})
    report = ValidationReport.load(tmp_path / "report.json")
    assert report.kept == [0, "case_1"] and report.n_quarantined == 1
