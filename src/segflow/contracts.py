"""Data contracts over the case manifest, expressed as great-expectations expectations.

Each `Rule` pairs one GX expectation with a name, a severity and a sentence template. Case
rules run over the listed cases and give per-case findings; dataset rules judge the delivery
as a whole. Cases with an error are quarantined, the others kept.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

import pandas as pd

Severity = Literal["error", "warning"]
INTEGER_DTYPES = ["uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64"]


@dataclass(frozen=True)
class Rule:
    name: str
    severity: Severity
    expectation: Callable[[], object]  # builds the GX expectation (GX imported lazily)
    message: str  # str.format template over the manifest row
    file_column: str = "image"


@dataclass(frozen=True)
class Finding:
    case_id: str
    file: str
    rule: str
    severity: Severity
    message: str


@dataclass
class ContractResult:
    findings: list[Finding]
    kept: list[str]
    quarantined: dict[str, list[str]]
    dataset_errors: list[Finding]

    @property
    def passed(self) -> bool:
        return not self.dataset_errors

    def to_report(self) -> dict:
        counts: dict[str, int] = {}
        for f in self.findings:
            counts[f.rule] = counts.get(f.rule, 0) + 1
        return {
            "passed": self.passed,
            "n_kept": len(self.kept),
            "n_quarantined": len(self.quarantined),
            "rule_counts": counts,
            "dataset_errors": [asdict(f) for f in self.dataset_errors],
            "quarantined": self.quarantined,
            "kept": self.kept,
            "findings": [asdict(f) for f in self.findings],
        }


def _gx():
    import great_expectations as gx

    return gx


def label_values_regex(labels: list[int]) -> str:
    """Regex over the manifest's JSON list of label values: every value is a declared label."""
    alternatives = "|".join(str(v) for v in sorted(labels))
    return rf"^\[(?:{alternatives})(?:, (?:{alternatives}))*\]$"


def case_rules(declared_labels: list[int], max_dim: int) -> list[Rule]:
    """Per-case rules; the order is the order findings are listed in."""
    ex = lambda: _gx().expectations  # noqa: E731 - short alias, evaluated lazily
    return [
        Rule("image_present", "error", lambda: ex().ExpectColumnValuesToBeInSet(column="image_exists", value_set=[True]),
             "listed in dataset.json, but the image file {image} does not exist"),
        Rule("label_present", "error", lambda: ex().ExpectColumnValuesToBeInSet(column="label_exists", value_set=[True]),
             "listed in dataset.json, but the label file {label} does not exist", "label"),
        Rule("image_readable", "error", lambda: ex().ExpectColumnValuesToBeInSet(column="image_error", value_set=[""]),
             "the image {image} cannot be read as NIfTI ({image_error})"),
        Rule("label_readable", "error", lambda: ex().ExpectColumnValuesToBeInSet(column="label_error", value_set=[""]),
             "the label {label} cannot be read as NIfTI ({label_error})", "label"),
        Rule("shapes_match", "error", lambda: ex().ExpectColumnPairValuesToBeEqual(
                 column_A="image_shape", column_B="label_shape", ignore_row_if="either_value_is_missing"),
             "image shape {image_shape} differs from label shape {label_shape}", "label"),
        Rule("spacing_match", "error", lambda: ex().ExpectColumnPairValuesToBeEqual(
                 column_A="image_spacing", column_B="label_spacing", ignore_row_if="either_value_is_missing"),
             "image spacing {image_spacing} differs from label spacing {label_spacing}", "label"),
        Rule("intensities_finite", "error", lambda: ex().ExpectColumnValuesToBeInSet(column="intensity_finite", value_set=[True]),
             "the image {image} holds NaN or infinite intensities"),
        Rule("label_integral", "error", lambda: ex().ExpectColumnValuesToBeInSet(column="label_integral", value_set=[True]),
             "the label {label} holds non-integer values {label_values}", "label"),
        Rule("label_values_declared", "error", lambda: ex().ExpectColumnValuesToMatchRegex(
                 column="label_values", regex=label_values_regex(declared_labels)),
             f"the label {{label}} holds values {{label_values}}; dataset.json declares {sorted(declared_labels)}", "label"),
        Rule("label_integer_dtype", "warning", lambda: ex().ExpectColumnValuesToBeInSet(
                 column="label_dtype", value_set=INTEGER_DTYPES, row_condition="label_integral==True",
                 condition_parser="pandas"),
             "the label {label} is stored as {label_dtype}; its values are whole numbers, so it is read as integers", "label"),
        Rule("dimensions_sane", "error", lambda: ex().ExpectColumnValuesToBeBetween(column="image_max_side", min_value=1, max_value=max_dim),
             f"the image {{image}} has shape {{image_shape}}, outside 1..{max_dim} voxels per side"),
        Rule("foreground_present", "warning", lambda: ex().ExpectColumnValuesToBeBetween(column="foreground_voxels", min_value=1),
             "the label {label} has no foreground voxel", "label"),
    ]


def _side(shape: object) -> float:
    return float(max(json.loads(shape))) if isinstance(shape, str) and shape else float("nan")


def _foreground(voxels: object) -> float:
    if not isinstance(voxels, str) or not voxels or voxels == "{}":
        return float("nan")
    return float(sum(n for value, n in json.loads(voxels).items() if value != "0"))


def with_features(manifest: pd.DataFrame) -> pd.DataFrame:
    """Add the derived columns some expectations read (largest side, foreground voxels)."""
    frame = manifest.copy()
    frame["image_max_side"] = frame.get("image_shape", pd.Series(dtype=object)).map(_side)
    frame["foreground_voxels"] = frame.get("label_voxels", pd.Series(dtype=object)).map(_foreground)
    for column in ("image_error", "label_error"):
        frame[column] = frame[column].fillna("")
    return frame


def _quiet_context():
    gx = _gx()
    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    context = gx.get_context(mode="ephemeral")
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def run_expectations(frame: pd.DataFrame, rules: list[Rule], suite_name: str) -> dict[str, list]:
    """Validate `frame` with one GX suite; return rule name -> failing case ids
    (or one ("*", observed value) pair for a failing table-level expectation)."""
    gx = _gx()
    context = _quiet_context()
    asset = context.data_sources.add_pandas("manifest").add_dataframe_asset(suite_name)
    batch = asset.add_batch_definition_whole_dataframe("all")
    suite = gx.ExpectationSuite(name=suite_name)
    for rule in rules:
        expectation = rule.expectation()
        expectation.meta = {"rule": rule.name, "severity": rule.severity}
        suite.add_expectation(expectation)
    suite = context.suites.add(suite)
    definition = context.validation_definitions.add(gx.ValidationDefinition(name=suite_name, data=batch, suite=suite))
    result = definition.run(
        batch_parameters={"dataframe": frame.reset_index(drop=True)},
        result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["case_id"]},
    )
    return {r.expectation_config.meta["rule"]: _failing_ids(r) for r in result.results}


def _failing_ids(expectation_result) -> list[str]:
    if expectation_result.success:
        return []
    if (expectation_result.exception_info or {}).get("raised_exception"):
        raise RuntimeError(f"expectation failed to run: {expectation_result.exception_info}")
    rows = expectation_result.result.get("unexpected_index_list")
    if rows is None:  # table-level expectation: the whole delivery fails, with what GX saw
        return [("*", expectation_result.result.get("observed_value"))]
    return [row["case_id"] for row in rows]


def _finding(row: pd.Series, rule: Rule) -> Finding:
    values = {k: ("" if pd.isna(v) else v) if not isinstance(v, (list, dict)) else v for k, v in row.items()}
    return Finding(str(row["case_id"]), str(values.get(rule.file_column, "")), rule.name, rule.severity,
                   rule.message.format(**values))


def case_findings(frame: pd.DataFrame, rules: list[Rule]) -> list[Finding]:
    """Findings of all case rules over the listed cases, grouped by case in manifest order."""
    failing = run_expectations(frame, rules, "case_rules")
    rows = {cid: row for cid, row in frame.set_index("case_id", drop=False).iterrows()}
    found = [_finding(rows[cid], rule) for rule in rules for cid in failing[rule.name]]
    order = {cid: i for i, cid in enumerate(frame["case_id"])}
    return sorted(found, key=lambda f: order[f.case_id])


def orphan_findings(manifest: pd.DataFrame) -> list[Finding]:
    """Files on disk that dataset.json does not list: reported, never used."""
    orphans = manifest[~manifest["listed"].astype(bool)]
    return [
        Finding(r.case_id, r.image or r.label, "orphan_file", "warning",
                f"{r.image or r.label} is on disk but not listed in dataset.json; it is not used")
        for r in orphans.itertuples()
    ]


def dataset_rules(min_cases: int) -> list[Rule]:
    """Delivery-level rules; `{observed}` is what GX observed for table-level expectations."""
    ex = lambda: _gx().expectations  # noqa: E731
    return [
        Rule("unique_case_ids", "error", lambda: ex().ExpectColumnValuesToBeUnique(column="case_id"),
             "case id {case_id} is listed more than once in dataset.json", "image"),
        Rule("min_cases", "error", lambda: ex().ExpectTableRowCountToBeBetween(min_value=min_cases),
             f"only {{observed}} usable cases remain; at least {min_cases} are required"),
        Rule("uniform_image_dtype", "warning", lambda: ex().ExpectColumnUniqueValueCountToBeBetween(
                 column="image_dtype", max_value=1),
             "images are stored with {observed} different dtypes; intensities are normalised per case"),
    ]


def dataset_findings(listed: pd.DataFrame, kept: list[str], min_cases: int) -> list[Finding]:
    """Delivery-level findings over the usable cases (duplicates over all listed rows)."""
    usable = listed[listed["case_id"].isin(kept) & ~listed["case_id"].duplicated(keep=False)]
    rules = dataset_rules(min_cases)
    outcome = run_expectations(listed, rules[:1], "dataset_ids")
    outcome.update(run_expectations(usable, rules[1:], "dataset_rules"))
    findings = []
    for rule in rules:
        for failing in dict.fromkeys(outcome[rule.name]):
            case_id, observed = failing if isinstance(failing, tuple) else (failing, "")
            message = rule.message.format(case_id=case_id, observed=observed, image="")
            findings.append(Finding(case_id, "dataset.json", rule.name, rule.severity, message))
    return findings


def check_manifest(manifest: pd.DataFrame, declared_labels: list[int], max_dim: int, min_cases: int) -> ContractResult:
    """Run every contract over a manifest and decide which cases are kept."""
    frame = with_features(manifest)
    listed = frame[frame["listed"].astype(bool)]
    findings = case_findings(listed, case_rules(declared_labels, max_dim)) + orphan_findings(frame)
    quarantined: dict[str, list[str]] = {}
    for f in findings:
        if f.severity == "error":
            quarantined.setdefault(f.case_id, []).append(f"{f.rule}: {f.message}")
    kept = [c for c in dict.fromkeys(listed["case_id"]) if c not in quarantined]
    delivery = dataset_findings(listed, kept, min_cases)
    dataset_errors = [f for f in delivery if f.severity == "error"]
    return ContractResult(findings + delivery, kept, quarantined, dataset_errors)
