"""The Data Docs read as the pipeline decides: a delivery without defects is green in GX's own
index, a warning turns only a warnings suite red, and every page says what a failed rule means."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import save_nifti

from segflow.config import ValidateConfig
from segflow.data.manifest import build_manifest
from segflow.data.msd import read_msd_dataset
from segflow.validation.contracts import check_manifest, gx_context
from segflow.validation.data_docs import GX_NOTE, READING_NOTE, write_data_docs

SHAPE = (6, 7, 5)
CASES = [f"case_{i:02d}" for i in range(8)]
GX_FAILED_ICON = "ge-failed-icon"


def write_delivery(root: Path, float_label: str | None = None, missing_label: str | None = None) -> Path:
    """Eight good cases; optionally one stored with a float label (a warning) or without its label
    (an error: quarantined)."""
    for i, case_id in enumerate(CASES):
        label = np.zeros(SHAPE, np.float32 if case_id == float_label else np.uint8)
        label[1:3, 1:3, 1:3], label[3:5, 3:5, 2:4] = 1, 2
        save_nifti(root / "imagesTr" / f"{case_id}.nii.gz", np.random.default_rng(i).random(SHAPE, dtype=np.float32))
        if case_id != missing_label:
            save_nifti(root / "labelsTr" / f"{case_id}.nii.gz", label)
    training = [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in CASES]
    (root / "dataset.json").write_text(json.dumps({"name": "Toy", "labels": {"0": "bg", "1": "a", "2": "b"},
                                                   "training": training}))
    return root


def validated(root: Path, dest: Path):
    context = gx_context()
    result = check_manifest(build_manifest(read_msd_dataset(root)), [0, 1, 2], ValidateConfig(min_cases=5),
                            context=context)
    findings = [vars(f) for f in result.findings]
    return result, write_data_docs(context, result.gx_results, findings, dest, "headline")


def failed_suites(result) -> set[str]:
    return {r.suite_name for r in result.gx_results if not r.success}


def test_a_delivery_without_defects_is_green_everywhere(tmp_path):
    result, index = validated(write_delivery(tmp_path / "data"), tmp_path / "docs")
    assert result.findings == [] and failed_suites(result) == set()
    assert GX_FAILED_ICON not in (index.parent / "gx" / "index.html").read_text()
    assert "table-danger" not in index.read_text() and "table-warning" not in index.read_text()


def test_a_warning_turns_only_its_warnings_suite_red(tmp_path):
    """A float-stored label is a warning: the case is kept, every errors suite passes."""
    result, index = validated(write_delivery(tmp_path / "data", float_label="case_03"), tmp_path / "docs")
    assert result.quarantined == {} and "case_03" in result.kept
    assert failed_suites(result) == {"segflow_case_warnings"}
    assert (index.parent / "gx" / "index.html").read_text().count(GX_FAILED_ICON) == 1


@pytest.mark.parametrize("page", ["index.html", "gx/index.html", "gx/validations/**/*.html"])
def test_every_page_says_what_a_failed_rule_means(tmp_path, page):
    """A quarantined case fails its errors suite; the pages say that means quarantined, rest kept,
    and GX's pages link back to segflow's summary."""
    result, index = validated(write_delivery(tmp_path / "data", missing_label="case_05"), tmp_path / "docs")
    assert set(result.quarantined) == {"case_05"} and len(result.kept) == len(CASES) - 1
    assert failed_suites(result) == {"segflow_case_errors"}
    pages = sorted(index.parent.glob(page))
    assert pages
    for found in pages:
        text = found.read_text(encoding="utf-8")
        assert (READING_NOTE if found == index else GX_NOTE) in text
        assert "quarantine" in text and "kept" in text
        if found != index:
            back = text.split("segflow's summary")[0].rsplit('href="', 1)[1].split('"')[0]
            assert (found.parent / back).resolve() == index.resolve()
