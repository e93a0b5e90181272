"""validate: run the data contracts over the manifest; keep good cases, stop on dataset errors
(and, with `validate.strict`, on any quarantine), so downstream stages never see a failed delivery.

Outputs: the JSON report, great-expectations Data Docs that open offline, a W&B findings table.
"""

from __future__ import annotations

import pandas as pd

from segflow.config import Params
from segflow.errors import StageFailed
from segflow.io import read_json, write_json
from segflow.paths import Paths
from segflow.validation import (Validation, build_report, findings_frame, run_checks, stop_reasons, summary,
                                write_docs)

FINDINGS_TABLE = "validate/findings"


def declared_labels(splits: dict) -> list[int]:
    """The label values masks may hold as delivered (raw values for 2D folders; see ingest)."""
    return sorted(int(v) for v in splits["label_values"])


def run(params: Params, manifest: pd.DataFrame, splits: dict) -> Validation:
    cfg = params.validate_
    return run_checks(manifest, declared_labels(splits), cfg.max_dim, cfg.min_cases,
                      folds=splits["folds"], **cfg.check_options())


def main(params: Params, paths: Paths, tracker=None) -> dict:
    strict = params.validate_.strict
    checked = run(params, pd.read_csv(paths.manifest, keep_default_na=True), read_json(paths.splits))
    result = checked.result
    reasons = stop_reasons(result, stop_on_quarantine=strict)
    text = summary(result, reasons)
    write_json(paths.validation_report, build_report(result, reasons, strict))
    index = write_docs(checked, paths.data_docs, text)
    if tracker is not None:
        tracker.log_table(FINDINGS_TABLE, findings_frame(result))
    if reasons:
        hint = " (validate.strict is on)" if strict and result.quarantined else ""
        raise StageFailed(f"{text}\nDelivery rejected{hint}. Report: {paths.validation_report}; Data Docs: {index}")
    print(f"{text}\nData Docs: {index}")
    return {"kept": len(result.kept), "quarantined": len(result.quarantined),
            "warnings": sum(f.severity == "warning" for f in result.findings)}
