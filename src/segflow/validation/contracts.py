"""Data contracts over the case manifest, expressed as great-expectations expectations.

Each `Rule` pairs one GX expectation with a name, a severity, a scope and a sentence template.
Derived feature columns (relative spacing difference, robust z-scores, ...) are computed first,
so that every decision itself is a GX expectation that Data Docs can show.

Four GX runs judge a delivery:
  1. case rules over the listed cases (an error quarantines the case), plus unique case ids;
  2. the orphan rule over the files on disk that no case uses (one row per case id);
  3. population rules over the usable cases (duplicates, leakage across folds, outliers);
  4. table rules over the usable cases (minimum count, declared labels present, dtypes).
A `dataset`-scope error rejects the delivery as a whole; warnings never remove a case.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from segflow.config import ValidateConfig

Severity = Literal["error", "warning"]
Scope = Literal["case", "dataset"]
INTEGER_DTYPES = ["uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64"]
MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution times this is its standard deviation
MEANAD_TO_SIGMA = 1.2533  # same for the mean absolute deviation (used when the MAD is 0)
SCALE_FLOOR = 0.01  # robust scale never below 1 % of |median|: identical values are not "spread 0"
MIN_OUTLIER_POPULATION = 8  # fewer usable cases give no meaningful median/MAD
DELIVERY = "*"  # case id of findings about the delivery as a whole


@dataclass(frozen=True)
class Rule:
    name: str
    severity: Severity
    expectation: Callable[[], object]  # builds the GX expectation (GX imported lazily)
    message: str  # str.format template over the manifest row (`observed` for table rules)
    file_column: str = "image"
    scope: Scope = "case"  # case: an error quarantines the case; dataset: it rejects the delivery


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
    gx_results: list = field(default_factory=list, repr=False)  # GX validation results, for Data Docs

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


def _ex():
    return _gx().expectations


def label_values_regex(labels: list[int]) -> str:
    """Regex over the manifest's JSON list of label values: every value is a declared label."""
    alternatives = "|".join(str(v) for v in sorted(labels))
    return rf"^\[(?:{alternatives})(?:, (?:{alternatives}))*\]$"


def default_foreground(declared_labels: Iterable[int]) -> list[int]:
    """Every declared label but 0: by the MSD convention 0 is the background."""
    return sorted(v for v in declared_labels if v != 0)


# --------------------------------------------------------------------------------------------
# Rules. Each factory returns rules in the order their findings are listed.


def _in_set(column: str, values: list) -> Callable[[], object]:
    return lambda: _ex().ExpectColumnValuesToBeInSet(column=column, value_set=values)


def _at_most(column: str, limit: float) -> Callable[[], object]:
    return lambda: _ex().ExpectColumnValuesToBeBetween(column=column, max_value=limit)


def _at_least(column: str, limit: float) -> Callable[[], object]:
    return lambda: _ex().ExpectColumnValuesToBeBetween(column=column, min_value=limit)


def _pair_equal(a: str, b: str) -> Callable[[], object]:
    return lambda: _ex().ExpectColumnPairValuesToBeEqual(
        column_A=a, column_B=b, ignore_row_if="either_value_is_missing")


def file_rules(role: str) -> list[Rule]:
    """Present, non-empty, the format its name says, decodable: for the image or the label file."""
    file = f"{role}_file"
    return [
        Rule(f"{role}_present", "error", _in_set(f"{role}_exists", [True]),
             f"the {role} file {{{file}}} does not exist", file),
        Rule(f"{role}_nonempty", "error", _at_least(f"{role}_bytes", 1),
             f"the {role} file {{{file}}} is empty (0 bytes)", file),
        Rule(f"{role}_format", "error", _pair_equal(f"{role}_format", f"{role}_format_expected"),
             f"the {role} file {{{file}}} is not what its name says: the name promises "
             f"{{{role}_format_expected}} data but its first bytes are {{{role}_format}}", file),
        Rule(f"{role}_readable", "error", _in_set(f"{role}_error", [""]),
             f"the {role} file {{{file}}} cannot be decoded ({{{role}_error}})", file),
    ]


def geometry_rules(max_dim: int, spacing_tolerance: float, affine_tolerance: float) -> list[Rule]:
    """Channels agree, image and label describe the same grid, sizes are plausible."""
    return [
        Rule("channels_consistent", "error", _in_set("channels_consistent", [True]),
             "the channel files {image_channels} differ in shape or spacing "
             "(shapes {image_channel_shapes}, spacings {image_channel_spacings})"),
        Rule("channel_count", "error", _pair_equal("n_channels", "expected_channels"),
             "the image has {n_channels:.0f} channel(s) but the delivery declares "
             "{expected_channels:.0f} modalities"),
        Rule("shapes_match", "error", _pair_equal("image_shape", "label_shape"),
             "image shape {image_shape} differs from label shape {label_shape}", "label"),
        Rule("spacing_match", "error", _at_most("spacing_rel_diff", spacing_tolerance),
             "image spacing {image_spacing} differs from label spacing {label_spacing} "
             f"(more than {spacing_tolerance:g} relative)", "label"),
        Rule("affine_match", "error", _at_most("affine_diff", affine_tolerance),
             "the label is not aligned with the image: orientation or origin differ by {affine_diff:.3g} "
             f"(voxels or direction cosines; tolerance {affine_tolerance:g}); image affine {{image_affine}}, "
             "label affine {label_affine}", "label"),
        Rule("dimensions_sane", "error", lambda: _ex().ExpectColumnValuesToBeBetween(
                 column="image_max_side", min_value=1, max_value=max_dim),
             f"the image {{image}} has shape {{image_shape}}, outside 1..{max_dim} voxels per side"),
    ]


def content_rules(declared_labels: list[int]) -> list[Rule]:
    """Intensities usable, label values whole and declared, some foreground."""
    return [
        Rule("intensities_finite", "error", _in_set("intensity_finite", [True]),
             "the image {image} holds NaN or infinite intensities"),
        Rule("label_integral", "error", _in_set("label_integral", [True]),
             "the label {label} holds non-integer values {label_values}", "label"),
        Rule("label_values_declared", "error", lambda: _ex().ExpectColumnValuesToMatchRegex(
                 column="label_values", regex=label_values_regex(declared_labels)),
             f"the label {{label}} holds values {{label_values}}; the delivery declares {sorted(declared_labels)}",
             "label"),
        Rule("label_integer_dtype", "warning", lambda: _ex().ExpectColumnValuesToBeInSet(
                 column="label_dtype", value_set=INTEGER_DTYPES, row_condition="label_integral==True",
                 condition_parser="pandas"),
             "the label {label} is stored as {label_dtype}; its values are whole numbers, so it is read as integers",
             "label"),
        Rule("foreground_present", "warning", _at_least("foreground_voxels", 1),
             "the label {label} has no foreground voxel", "label"),
    ]


def listing_rules() -> list[Rule]:
    """How the delivery lists its cases: inside its own folder, each id once."""
    return [
        Rule("paths_confined", "error", _in_set("paths_confined", [True]),
             "{unsafe_reason}; it is refused and never read", "unsafe_paths"),
        Rule("unique_case_ids", "error", lambda: _ex().ExpectColumnValuesToBeUnique(column="case_id"),
             "case id {case_id} is listed more than once in {descriptor}", "descriptor", "dataset"),
    ]


def case_rules(declared_labels: list[int], max_dim: int, spacing_tolerance: float = 1e-3,
               affine_tolerance: float = 1e-3) -> list[Rule]:
    """Per-case rules over the listed cases; the order is the order findings are listed in."""
    return [
        listing_rules()[0], *file_rules("image"), *file_rules("label"),
        *geometry_rules(max_dim, spacing_tolerance, affine_tolerance), *content_rules(declared_labels),
    ]


def orphan_rules() -> list[Rule]:
    """Files on disk that no listed case uses: reported, never used."""
    return [Rule("orphan_file", "warning", _in_set("listed", [True]),
                 "{orphan_file} is on disk but no case in {descriptor} uses it; it is ignored",
                 "orphan_file", "dataset")]


def _outlier_rule(quantity: str, described: str, outlier_z: float) -> Rule:
    """Warning for a case whose `quantity` lies more than `outlier_z` robust SDs from the median."""
    return Rule(f"{quantity}_outlier", "warning", _at_most(f"{quantity}_robust_z", outlier_z),
                f"the image {{image}} has {described}, far from the delivery's median {{{quantity}_median}} "
                f"(robust z {{{quantity}_robust_z:.1f}} > {outlier_z:g})", "image", "dataset")


def population_rules(outlier_z: float) -> list[Rule]:
    """Rules judging each usable case against the others: copies, leakage, robust outliers."""
    return [
        Rule("duplicate_content", "warning", lambda: _ex().ExpectColumnValuesToBeUnique(column="content_key"),
             "case {case_id} has the same voxel content as {content_twins}", "image", "dataset"),
        Rule("content_leakage", "error", _at_most("content_fold_count", 1),
             "case {case_id} has the same voxel content as {content_twins} in another fold "
             "(folds {content_folds}); validation would score cases the network trained on", "image", "dataset"),
        _outlier_rule("spacing", "spacing {image_spacing}", outlier_z),
        _outlier_rule("shape", "shape {image_shape}", outlier_z),
        _outlier_rule("intensity", "intensity median and 99.5th percentile {intensity_summary}", outlier_z),
    ]


def descriptor_rules() -> list[Rule]:
    """What the descriptor itself declares wrongly (nnU-Net v2's dataset.json), judged once."""
    return [
        Rule("labels_consecutive", "error", _in_set("labels_consecutive", [True]),
             "{descriptor} declares the label values {declared_label_values}; they must be consecutive "
             "from 0 (0, 1, 2, ...), as nnU-Net v2 requires", "descriptor", "dataset"),
        Rule("file_ending_matches", "error", _in_set("file_ending_found", [True]),
             "{descriptor} declares the file_ending {file_ending} but no file in imagesTr or labelsTr has it "
             "(they are listed as orphans)", "descriptor", "dataset"),
        Rule("declared_case_count", "warning", _in_set("case_count_matches", [True]),
             "{descriptor} says numTraining is {declared_cases} but the folders hold {found_cases} case(s); "
             "the cases found are used", "descriptor", "dataset"),
    ]


def descriptor_row(frame: pd.DataFrame) -> pd.DataFrame:
    """One row of the descriptor facts (nnU-Net v2); empty for layouts that have none."""
    if frame.empty or "labels_consecutive" not in frame or frame["labels_consecutive"].isna().all():
        return frame.iloc[:0]
    row = frame.iloc[:1].copy()
    row["case_id"] = DELIVERY  # findings about the descriptor name the delivery, not a case
    found = int(frame.loc[frame["listed"].astype(bool), "case_id"].nunique())
    declared = row["declared_cases"].iloc[0]
    row["found_cases"] = found
    row["declared_cases"] = "not given" if pd.isna(declared) else int(declared)
    row["case_count_matches"] = bool(pd.isna(declared) or int(declared) == found)
    for column in ("labels_consecutive", "file_ending_found"):
        row[column] = row[column].map(lambda v: str(v).lower() == "true")
    return row


def _label_present_rule(value: int, severity: Severity) -> Rule:
    return Rule("declared_label_present", severity, lambda: _ex().ExpectColumnMaxToBeBetween(
                    column=f"label_voxels_{value}", min_value=1),
                f"label {value} is declared but no kept case contains it", "descriptor", "dataset")


def dataset_rules(min_cases: int, declared_labels: list[int] | None = None,
                  foreground_labels: list[int] | None = None) -> list[Rule]:
    """Delivery-level rules; `{observed}` is what GX observed for table-level expectations.
    A declared foreground label found nowhere is an error, an absent background a warning."""
    declared = sorted(declared_labels or [])
    foreground = set(default_foreground(declared) if foreground_labels is None else foreground_labels)
    return [
        Rule("min_cases", "error", lambda: _ex().ExpectTableRowCountToBeBetween(min_value=min_cases),
             f"only {{observed}} usable cases remain; at least {min_cases} are required", "descriptor", "dataset"),
        *[_label_present_rule(v, "error" if v in foreground else "warning") for v in declared],
        Rule("uniform_image_dtype", "warning", lambda: _ex().ExpectColumnUniqueValueCountToBeBetween(
                 column="image_dtype", max_value=1),
             "images are stored with {observed} different dtypes; intensities are normalised per case",
             "descriptor", "dataset"),
    ]


# --------------------------------------------------------------------------------------------
# Features: derived columns the expectations read.


def _parse(text: object) -> object:
    return json.loads(text) if isinstance(text, str) and text else None


def _side(shape: object) -> float:
    values = _parse(shape)
    return float(max(values)) if values else float("nan")


def _foreground(voxels: object, foreground: set[str] | None) -> float:
    """Voxels of the foreground labels (of every label but 0 when none are named)."""
    counts = _parse(voxels)
    if not counts:
        return float("nan")
    chosen = foreground if foreground is not None else set(counts) - {"0"}
    return float(sum(n for value, n in counts.items() if value in chosen))


def relative_difference(a: object, b: object) -> float:
    """max |a - b| / max(|a|, |b|) over the axes of two JSON vectors; NaN when either is unknown
    or their lengths differ (the shape rule reports that)."""
    x, y = _parse(a), _parse(b)
    if x is None or y is None or len(x) != len(y):
        return float("nan")
    x, y = np.asarray(x, float), np.asarray(y, float)
    scale = np.maximum(np.maximum(np.abs(x), np.abs(y)), 1e-12)
    return float(np.max(np.abs(x - y) / scale)) if x.size else 0.0


def affine_difference(image_affine: object, label_affine: object, spacing: object) -> float:
    """How far the label's grid is from the image's, spacing aside (the spacing rule covers it):
    direction cosines differ by this much, or origins by this many image voxels."""
    a, b = _parse(image_affine), _parse(label_affine)
    if a is None or b is None or np.shape(a) != np.shape(b):
        return float("nan")
    a, b = np.asarray(a, float), np.asarray(b, float)
    n = a.shape[0] - 1
    direction = [m[:n, :n] / np.maximum(np.linalg.norm(m[:n, :n], axis=0), 1e-12) for m in (a, b)]
    voxel = np.asarray(_parse(spacing) or [1.0] * n, float)[:n]
    origin_shift = np.abs(a[:n, n] - b[:n, n]) / np.maximum(voxel if voxel.size == n else 1.0, 1e-12)
    return float(max(np.max(np.abs(direction[0] - direction[1])), np.max(origin_shift)))


def channels_agree(shapes: object, spacings: object, tolerance: float) -> object:
    """True when every channel file has the first one's shape and (within tolerance) spacing."""
    shape_list, spacing_list = _parse(shapes), _parse(spacings)
    if not shape_list:
        return None
    same_shape = all(s == shape_list[0] for s in shape_list)
    spacing_ok = all(relative_difference(json.dumps(s), json.dumps(spacing_list[0])) <= tolerance
                     for s in spacing_list or [])
    return bool(same_shape and spacing_ok)


def _text(frame: pd.DataFrame, column: str) -> pd.Series:
    return frame[column].where(frame[column].notna(), "").astype(str)


def _rowwise(frame: pd.DataFrame, function: Callable, *columns: str) -> list:
    return [function(*values) for values in zip(*(frame[c] for c in columns), strict=True)]


def _with_text_columns(manifest: pd.DataFrame) -> pd.DataFrame:
    """The full manifest schema, with text columns blank (not NaN) where empty, as messages need."""
    from segflow.data.manifest import MANIFEST_COLUMNS

    frame = manifest.reindex(columns=list(dict.fromkeys([*manifest.columns, *MANIFEST_COLUMNS])))
    for column in ("image_error", "label_error", "unsafe_paths", "unsafe_reason", "image", "label"):
        frame[column] = _text(frame, column)
    frame["descriptor"] = frame["descriptor"].fillna("dataset.json")
    listed_outside = frame["descriptor"] + " names " + frame["unsafe_paths"] + ", outside the dataset folder"
    frame["unsafe_reason"] = frame["unsafe_reason"].where(frame["unsafe_reason"] != "", listed_outside)
    for role in ("image", "label"):
        frame[f"{role}_file"] = _text(frame, f"{role}_file").replace("", "(not named in the listing)")
    frame["orphan_file"] = frame["image"].where(frame["image"] != "", frame["label"])
    return frame


def with_features(manifest: pd.DataFrame, spacing_tolerance: float = 1e-3,
                  foreground_labels: list[int] | None = None) -> pd.DataFrame:
    """Add the row-wise derived columns the case expectations read."""
    frame = _with_text_columns(manifest)
    foreground = {str(v) for v in foreground_labels} if foreground_labels is not None else None
    frame["image_max_side"] = frame["image_shape"].map(_side)
    frame["foreground_voxels"] = frame["label_voxels"].map(lambda v: _foreground(v, foreground))
    frame["spacing_rel_diff"] = _rowwise(frame, relative_difference, "image_spacing", "label_spacing")
    frame["affine_diff"] = _rowwise(frame, affine_difference, "image_affine", "label_affine", "image_spacing")
    frame["channels_consistent"] = _rowwise(frame, lambda shapes, spacings: channels_agree(
        shapes, spacings, spacing_tolerance), "image_channel_shapes", "image_channel_spacings")
    return frame


def _vectors(column: pd.Series) -> np.ndarray:
    """JSON vectors as a float matrix, rows padded with NaN (unknown rows all NaN)."""
    parsed = [_parse(v) or [] for v in column]
    width = max((len(v) for v in parsed), default=0)
    rows = [list(map(float, v)) + [np.nan] * (width - len(v)) for v in parsed]
    return np.array(rows, dtype=float).reshape(len(parsed), width)


def robust_z(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the largest |x - median| / robust scale over the columns, and the column medians.

    The scale is 1.4826 * MAD (the standard deviation, were the data normal); when over half
    the values are identical the MAD is 0, so the mean absolute deviation stands in, and the scale
    never drops below 1 % of |median|, so tiny float noise around a common value is no outlier.
    """
    if values.size == 0 or values.shape[0] < MIN_OUTLIER_POPULATION:
        return np.full(values.shape[0], np.nan), np.full(values.shape[1] if values.ndim == 2 else 0, np.nan)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns give NaN, as they should
        median = np.nanmedian(values, axis=0)
        deviation = np.abs(values - median)
        scale = MAD_TO_SIGMA * np.nanmedian(deviation, axis=0)
        scale = np.where(scale > 0, scale, MEANAD_TO_SIGMA * np.nanmean(deviation, axis=0))
        scale = np.maximum(scale, np.maximum(SCALE_FLOOR * np.abs(median), 1e-12))
        z = np.nanmax(deviation / scale, axis=1)
    return z, median


def _median_text(median: np.ndarray, digits: int = 3) -> str:
    return json.dumps([float(np.round(m, digits)) for m in median])


def _add_outlier_features(frame: pd.DataFrame) -> None:
    """Robust z of spacing, shape and intensity (median and 99.5th percentile) per case."""
    intensity = frame[["intensity_p50", "intensity_p99_5"]].astype(float).to_numpy()
    for name, values in (("spacing", _vectors(frame["image_spacing"])), ("shape", _vectors(frame["image_shape"])),
                         ("intensity", intensity)):
        z, median = robust_z(values)
        frame[f"{name}_robust_z"] = z
        frame[f"{name}_median"] = _median_text(median)
    frame["intensity_summary"] = [_median_text(row) for row in intensity]


def _add_duplicate_features(frame: pd.DataFrame, folds: dict[str, int] | None) -> None:
    """Which other cases share each case's content, and over how many folds such a group spreads."""
    hashes = frame["content_hash"]
    key = hashes.where(hashes.notna() & (hashes.astype(str) != ""))  # no file read: no content to compare
    frame["content_key"] = key
    groups = pd.DataFrame({"case_id": frame["case_id"], "key": key, "fold": frame["case_id"].map(folds or {})})
    members = groups.dropna(subset=["key"]).groupby("key")
    twins = members["case_id"].agg(list).to_dict()
    fold_sets = members["fold"].agg(lambda s: sorted({int(f) for f in s.dropna()})).to_dict()
    frame["content_twins"] = [", ".join(c for c in twins.get(k, []) if c != case_id)
                              for k, case_id in zip(key, frame["case_id"], strict=True)]
    frame["content_folds"] = [json.dumps(fold_sets.get(k, [])) for k in key]
    frame["content_fold_count"] = [float(len(fold_sets[k])) if k in fold_sets else np.nan for k in key]


def _add_label_counts(frame: pd.DataFrame, declared_labels: list[int]) -> None:
    counts = frame["label_voxels"].map(lambda v: _parse(v) or {})
    for value in declared_labels:
        frame[f"label_voxels_{value}"] = counts.map(lambda c, v=str(value): float(c.get(v, 0)))


def with_population_features(usable: pd.DataFrame, declared_labels: list[int],
                             folds: dict[str, int] | None = None) -> pd.DataFrame:
    """Add the columns that compare each usable case with the others."""
    frame = usable.copy()
    _add_outlier_features(frame)
    _add_duplicate_features(frame, folds)
    _add_label_counts(frame, declared_labels)
    return frame


# --------------------------------------------------------------------------------------------
# Running GX and turning its results into findings.


def gx_context(project_root=None):
    """A quiet GX data context: ephemeral by default; a file context below `project_root` keeps
    the validation results, so its Data Docs (`context.build_data_docs()`) show every run."""
    gx = _gx()
    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    if project_root is None:
        context = gx.get_context(mode="ephemeral")
    else:
        context = gx.get_context(mode="file", project_root_dir=str(project_root))
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def suite_notes(rules: list[Rule]) -> str:
    """What a failed expectation of these rules (one severity) does to the delivery, for GX's pages."""
    if all(rule.severity == "warning" for rule in rules):
        return "Warnings: a failed expectation here is reported; every case is kept."
    effects = []
    if any(rule.scope == "case" for rule in rules):
        effects.append("a failed expectation quarantines the cases it names and the rest are kept")
    stops = [rule.name for rule in rules if rule.scope == "dataset"]
    if stops:
        effects.append(f"a failed {', '.join(dict.fromkeys(stops))} stops the pipeline")
    return f"Errors: {'; '.join(effects)}."


def evaluate(context, frame: pd.DataFrame, rules: list[Rule], suite_name: str) -> tuple[list[list], object]:
    """Validate `frame` with one GX suite in `context`; per rule (in order) the failing case ids,
    or one (DELIVERY, observed value) pair for a failing table-level expectation."""
    gx = _gx()
    source = context.data_sources.add_or_update_pandas(f"segflow_{suite_name}")
    batch = source.add_dataframe_asset(suite_name).add_batch_definition_whole_dataframe("all")
    suite = gx.ExpectationSuite(name=f"segflow_{suite_name}", notes=suite_notes(rules))
    for index, rule in enumerate(rules):
        expectation = rule.expectation()
        expectation.meta = {"rule": rule.name, "severity": rule.severity, "scope": rule.scope, "rule_index": index}
        expectation.notes = f"segflow rule **{rule.name}** ({rule.severity}): {rule.message}"
        suite.add_expectation(expectation)
    suite = context.suites.add_or_update(suite)
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=f"segflow_{suite_name}", data=batch, suite=suite))
    result = definition.run(
        batch_parameters={"dataframe": frame.reset_index(drop=True)},
        result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["case_id"]},
    )
    failing: list[list] = [[] for _ in rules]
    for outcome in result.results:
        failing[int(outcome.expectation_config.meta["rule_index"])] = _failing_ids(outcome)
    return failing, result


def run_expectations(frame: pd.DataFrame, rules: list[Rule], suite_name: str) -> dict[str, list]:
    """Validate `frame` with one GX suite; rule name -> failing case ids (names assumed unique)."""
    failing, _ = evaluate(gx_context(), frame, rules, suite_name)
    return {rule.name: ids for rule, ids in zip(rules, failing, strict=True)}


def _failing_ids(expectation_result) -> list:
    if expectation_result.success:
        return []
    if (expectation_result.exception_info or {}).get("raised_exception"):
        raise RuntimeError(f"expectation failed to run: {expectation_result.exception_info}")
    rows = expectation_result.result.get("unexpected_index_list")
    if rows is None:  # table-level expectation: the whole delivery fails, with what GX saw
        return [(DELIVERY, expectation_result.result.get("observed_value"))]
    return list(dict.fromkeys(row["case_id"] for row in rows))


class _Blank(dict):
    """Row values for a message template: unknown keys read as empty text."""

    def __missing__(self, key: str) -> str:
        return ""


def _row_values(row: pd.Series | dict) -> _Blank:
    return _Blank({k: ("" if not isinstance(v, (list, dict)) and pd.isna(v) else v) for k, v in row.items()})


def _finding(values: _Blank, rule: Rule) -> Finding:
    return Finding(str(values["case_id"]), str(values.get(rule.file_column, "")), rule.name, rule.severity,
                   rule.message.format_map(values))


def findings_of(frame: pd.DataFrame, rules: list[Rule], failing: list[list],
                descriptor: str = "dataset.json") -> list[Finding]:
    """Findings for the failing rows (first row of an id) or table-level failures, in rule order."""
    unique = frame.drop_duplicates("case_id").set_index("case_id", drop=False)
    rows = {case_id: _row_values(row) for case_id, row in unique.iterrows()}
    delivery = _Blank({"case_id": DELIVERY, "descriptor": descriptor})
    found = []
    for rule, ids in zip(rules, failing, strict=True):
        for failed in ids:
            values = _Blank(delivery | {"observed": failed[1]}) if isinstance(failed, tuple) else rows[failed]
            found.append(_finding(values, rule))
    return found


def _by_case_order(findings: list[Finding], frame: pd.DataFrame) -> list[Finding]:
    order = {cid: i for i, cid in enumerate(dict.fromkeys(frame["case_id"]))}
    return sorted(findings, key=lambda f: order.get(f.case_id, len(order)))


@dataclass
class _Judge:
    """Runs rule sets in one GX context and keeps every validation result (for Data Docs)."""

    context: object
    descriptor: str  # what lists the cases: named by findings about the delivery as a whole
    results: list = field(default_factory=list)

    def __call__(self, frame: pd.DataFrame, rules: list[Rule], name: str) -> list[Finding]:
        """The rules' findings, in rule order. Errors and warnings validate as two suites
        (`<name>_errors`, `<name>_warnings`), so GX marks a suite failed only for what its
        severity means: a delivery with warnings alone shows every errors suite passed."""
        failing: list[list] = [[] for _ in rules]
        for severity in ("error", "warning"):
            picked = [i for i, rule in enumerate(rules) if rule.severity == severity]
            if not picked:
                continue
            found, result = evaluate(self.context, frame, [rules[i] for i in picked], f"{name}_{severity}s")
            self.results.append(result)
            for i, ids in zip(picked, found, strict=True):
                failing[i] = ids
        return findings_of(frame, rules, failing, self.descriptor)


def quarantine(findings: list[Finding]) -> dict[str, list[str]]:
    """Case id -> reasons, for every case with a case-level error."""
    quarantined: dict[str, list[str]] = {}
    for f in findings:
        if f.severity == "error":
            quarantined.setdefault(f.case_id, []).append(f"{f.rule}: {f.message}")
    return quarantined


def _judge_listed(judge: _Judge, listed: pd.DataFrame, rules: list[Rule]) -> tuple[list[Finding], list[Finding]]:
    """(case-scope findings in case order, dataset-scope findings) of the rules over listed cases."""
    found = judge(listed, rules, "case")
    case_scope = {r.name for r in rules if r.scope == "case"}
    return (_by_case_order([f for f in found if f.rule in case_scope], listed),
            [f for f in found if f.rule not in case_scope])


def orphan_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The files no case uses, one row per case id naming all of that id's files: a finding is
    made from the first row of an id, so a listed case of the same id must not stand in."""
    orphans = frame[~frame["listed"].astype(bool)]
    files = orphans.groupby("case_id", sort=False)["orphan_file"].agg(", ".join)
    rows = orphans.drop_duplicates("case_id").copy()
    rows["orphan_file"] = rows["case_id"].map(files)
    return rows


def _usable(listed: pd.DataFrame, kept: list[str]) -> pd.DataFrame:
    """Kept cases whose id is unique: the population dataset rules judge."""
    return listed[listed["case_id"].isin(kept) & ~listed["case_id"].duplicated(keep=False)]


def check_manifest(manifest: pd.DataFrame, declared_labels: list[int], rules: ValidateConfig = ValidateConfig(), *,
                   folds: dict[str, int] | None = None, context=None) -> ContractResult:
    """Run every contract over a manifest and decide which cases are kept.

    Args:
        rules: the thresholds (params.yaml's `validate` section): max_dim, min_cases, tolerances,
            outlier_z, foreground_labels (default: declared but 0).
        folds: case id -> fold; identical content in two folds is leakage (a dataset error).
        context: a GX data context to validate in (e.g. `gx_context(folder)`, whose Data Docs the
            caller builds); default a quiet ephemeral one.
    """
    frame = with_features(manifest, rules.spacing_tolerance, rules.foreground_labels)
    judge = _Judge(context or gx_context(), str(frame["descriptor"].iloc[0]) if len(frame) else "dataset.json")
    listed = frame[frame["listed"].astype(bool)]
    case_checks = case_rules(declared_labels, rules.max_dim, rules.spacing_tolerance, rules.affine_tolerance)
    per_case, listing = _judge_listed(judge, listed, case_checks + listing_rules()[1:])
    quarantined = quarantine(per_case)
    kept = [c for c in dict.fromkeys(listed["case_id"]) if c not in quarantined]
    usable = _usable(listed, kept)
    population = with_population_features(usable, declared_labels, folds)
    descriptor = descriptor_row(frame)
    delivery = (listing + (judge(descriptor, descriptor_rules(), "descriptor") if len(descriptor) else [])
                + judge(orphan_rows(frame), orphan_rules(), "orphan")
                + _by_case_order(judge(population, population_rules(rules.outlier_z), "population"), usable)
                + judge(population, dataset_rules(rules.min_cases, declared_labels, rules.foreground_labels),
                        "dataset"))
    dataset_errors = [f for f in delivery if f.severity == "error"]
    return ContractResult(per_case + delivery, kept, quarantined, dataset_errors, judge.results)
