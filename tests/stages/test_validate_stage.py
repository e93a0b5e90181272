"""validate stage: strict mode stops on any quarantine; Data Docs name every rule and open offline;
the findings go to the tracker as a table."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml
from conftest import REPO, merge, synthetic_case

from segflow.config import parse_params
from segflow.errors import StageFailed
from segflow.paths import Paths
from segflow.stages import ingest, validate
from segflow.validation.data_docs import external_resources

SHAPE = (16, 24, 16)
GOOD = [f"case_{i}" for i in range(4)]
NO_LABEL = "case_nolabel"


class RecordingTracker:
    def __init__(self):
        self.tables: dict = {}

    def log_table(self, key, dataframe):
        self.tables[key] = dataframe


def write_delivery(root: Path) -> None:
    """Four good cases and one listed case whose label file was never delivered."""
    for folder in ("imagesTr", "labelsTr"):
        (root / folder).mkdir(parents=True)
    for seed, case in enumerate([*GOOD, NO_LABEL]):
        image, label = synthetic_case(seed, SHAPE)
        nib.save(nib.Nifti1Image(image, np.eye(4)), root / "imagesTr" / f"{case}.nii.gz")
        if case != NO_LABEL:
            nib.save(nib.Nifti1Image(label, np.eye(4)), root / "labelsTr" / f"{case}.nii.gz")
    training = [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in [*GOOD, NO_LABEL]]
    labels = {"0": "background", "1": "anterior", "2": "posterior"}
    (root / "dataset.json").write_text(json.dumps({"name": "Toy", "labels": labels, "training": training}))


def ingested(tmp_path: Path, strict: bool):
    """A project folder with the delivery ingested; returns (params, paths)."""
    write_delivery(tmp_path / "data" / "Toy")
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    params = parse_params(merge(raw, {"data": {"root": "data/Toy", "local_copy": None},
                                      "split": {"n_folds": 2},
                                      "validate": {"min_cases": 2, "strict": strict}}))
    paths = Paths(tmp_path)
    ingest.main(params, paths)
    return params, paths


def local_resources(page: Path) -> list[str]:
    text = page.read_text(encoding="utf-8")
    found = re.findall(r"<(?:script|link|img)\b[^>]*?\b(?:src|href)=\"([^\"#:]+)\"", text)
    return [ref for ref in found if not ref.startswith("data:")]


def test_strict_mode_turns_a_quarantine_into_a_stop(tmp_path):
    params, paths = ingested(tmp_path, strict=True)

    with pytest.raises(StageFailed) as failed:
        validate.main(params, paths, RecordingTracker())

    message = str(failed.value)
    assert NO_LABEL in message and "label_present" in message and "validate.strict" in message
    report = json.loads(paths.validation_report.read_text())
    assert report["decision"] == {"stop": True, "reasons": ["1 case(s) quarantined"], "strict": True}
    assert (paths.data_docs / "index.html").is_file()  # written for the person who must look


def test_without_strict_the_good_cases_go_on_with_docs_and_findings_table(tmp_path, capsys):
    params, paths = ingested(tmp_path, strict=False)
    tracker = RecordingTracker()

    summary = validate.main(params, paths, tracker)

    assert summary["kept"] == len(GOOD) and summary["quarantined"] == 1
    assert f"{NO_LABEL}: label_present" in capsys.readouterr().out
    table = tracker.tables[validate.FINDINGS_TABLE]
    assert list(table.columns) == ["case_id", "file", "rule", "severity", "message"]
    assert (table["case_id"] == NO_LABEL).any() and (table["rule"] == "label_present").any()


def test_data_docs_name_every_rule_and_load_nothing_from_the_network(tmp_path):
    params, paths = ingested(tmp_path, strict=False)
    validate.main(params, paths)
    validate.main(params, paths)  # a rerun replaces the folder whole

    docs = paths.data_docs
    index = (docs / "index.html").read_text()
    report = json.loads(paths.validation_report.read_text())
    for rule in {f["rule"] for f in report["findings"]} | {"label_values_declared", "min_cases"}:
        assert f"<code>{rule}</code>" in index
    assert NO_LABEL in index
    pages = list(docs.rglob("*.html"))
    assert (docs / "gx" / "index.html") in pages and len(list((docs / "gx" / "validations").rglob("*.html"))) >= 2
    for page in pages:
        assert external_resources(page.read_text(encoding="utf-8")) == [], page
        for ref in local_resources(page):
            assert (page.parent / ref).is_file(), f"{page} needs missing {ref}"
    assert not list(docs.parent.glob(".data_docs*")), "no staging folder left behind"
