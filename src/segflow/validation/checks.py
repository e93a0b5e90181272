"""Running the data contracts over a manifest in a great-expectations context of our own, kept
with the result so Data Docs show exactly this run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from segflow.config import ValidateConfig
from segflow.validation.contracts import ContractResult, check_manifest, default_foreground, gx_context
from segflow.validation.data_docs import write_data_docs
from segflow.validation.report import findings_frame


@dataclass(frozen=True)
class Validation:
    """The contracts' verdict on a manifest, with the GX context that holds its suites and
    results (for Data Docs)."""

    result: ContractResult
    gx_context: Any


def run_checks(manifest: pd.DataFrame, declared_labels: list[int], rules: ValidateConfig,
               folds: dict[str, int] | None = None, ignore_label: int | None = None) -> Validation:
    """`check_manifest` in a GX context of our own, kept so Data Docs show exactly this run.
    Masks may hold `ignore_label` (nnU-Net's), which need not appear in any case."""
    if ignore_label is not None and rules.foreground_labels is None:
        foreground = [v for v in default_foreground(declared_labels) if v != ignore_label]
        rules = rules.model_copy(update={"foreground_labels": foreground})
    context = gx_context()
    result = check_manifest(manifest, declared_labels, rules, folds=folds, context=context)
    return Validation(result, context)


def write_docs(checked: Validation, dest: Path, headline: str) -> Path:
    """Data Docs of a validation (see `segflow.validation.data_docs`); returns their index.html."""
    findings = findings_frame(checked.result).to_dict("records")
    return write_data_docs(checked.gx_context, checked.result.gx_results, findings, dest, headline)


