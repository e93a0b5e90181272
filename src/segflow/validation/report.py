"""The validation outcome (`checks`) judged: the decision, a one-screen summary, a findings table,
and the JSON report (artifacts/validate/report.json) with its one typed reader,
`ValidationReport.load`, for the stages and tools that read it.

The validate stage and `segflow validate` (a delivery outside the pipeline, `delivery`) both go
through here, so one delivery gets the same findings and decision either way.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from pydantic import BaseModel, ConfigDict

from segflow.files import load_json_model

if TYPE_CHECKING:
    from segflow.validation.contracts import ContractResult

FINDING_COLUMNS = ["case_id", "file", "rule", "severity", "message"]
SUMMARY_CASES = 8  # quarantined cases listed by name in the summary; the rest are counted


# --- decision, summary, report ---------------------------------------------------------------


def warnings_of(result: ContractResult) -> list:
    return [f for f in result.findings if f.severity == "warning"]


def stop_reasons(result: ContractResult, *, stop_on_quarantine: bool, stop_on_warning: bool = False) -> list[str]:
    """Why this outcome must stop (empty: go on). Dataset-level errors always stop."""
    reasons = []
    if result.dataset_errors:
        reasons.append(f"{len(result.dataset_errors)} dataset-level error(s)")
    if stop_on_quarantine and result.quarantined:
        reasons.append(f"{len(result.quarantined)} case(s) quarantined")
    if stop_on_warning and warnings_of(result):
        reasons.append(f"{len(warnings_of(result))} warning(s), and warnings fail in strict mode")
    return reasons


def summary(result: ContractResult, reasons: list[str]) -> str:
    """One screen: the verdict, findings per rule, the quarantined cases, dataset-level errors."""
    verdict = f"FAILED: {'; '.join(reasons)}" if reasons else "OK"
    lines = [f"validate: {len(result.kept)} cases kept, {len(result.quarantined)} quarantined, "
             f"{len(result.dataset_errors)} dataset-level errors -> {verdict}"]
    counts: dict[tuple[str, str], int] = {}
    for f in result.findings:
        counts[(f.rule, f.severity)] = counts.get((f.rule, f.severity), 0) + 1
    if counts:
        lines.append("findings by rule:")
        lines += [f"  {rule:<24} {severity:<8} {n}" for (rule, severity), n in counts.items()]
    if result.quarantined:
        lines.append("quarantined:")
        shown = list(result.quarantined.items())[:SUMMARY_CASES]
        lines += [f"  {case}: {reasons_[0]}" + (f" (+{len(reasons_) - 1} more)" if len(reasons_) > 1 else "")
                  for case, reasons_ in shown]
        if len(result.quarantined) > len(shown):
            lines.append(f"  ... and {len(result.quarantined) - len(shown)} more cases (see the report)")
    lines += [f"ERROR {f.rule}: {f.message}" for f in result.dataset_errors]
    return "\n".join(lines)


def build_report(result: ContractResult, reasons: list[str], strict: bool, source: Path | None = None) -> dict:
    """The contracts' report plus the decision taken on it (and the delivery it judged)."""
    report = result.to_report()
    report["decision"] = {"stop": bool(reasons), "reasons": reasons, "strict": strict}
    if source is not None:
        report["source"] = str(source)
    return report


def findings_frame(result: ContractResult) -> pd.DataFrame:
    """All findings as a table (one row each), e.g. for the W&B findings table."""
    rows = [{k: v for k, v in asdict(f).items() if k in FINDING_COLUMNS} for f in result.findings]
    return pd.DataFrame(rows, columns=FINDING_COLUMNS)


class ValidationReport(BaseModel):
    """artifacts/validate/report.json as later stages read it: which cases go on, and why not."""

    model_config = ConfigDict(frozen=True, extra="allow")  # findings etc. are for people and W&B
    passed: bool
    n_kept: int
    n_quarantined: int
    kept: list[str | int]  # case ids as the manifest reads them (a 2D folder's numeric stems are ints)
    quarantined: dict[str, list[str]]
    decision: dict

    @classmethod
    def load(cls, path: Path | str) -> ValidationReport:
        """Read report.json; a missing or invalid file is a `ConfigError` naming it."""
        return load_json_model(cls, path, "validation report", "run the validate stage (dvc repro validate)")
