"""Run the data contracts and turn their outcome into a decision, a one-screen summary, a JSON
report, Data Docs and a findings table.

The validate stage (manifest from ingest) and `segflow validate` (a new delivery, folder or
archive, no pipeline) both go through here, so one delivery gets the same findings either way.
"""

from __future__ import annotations

import os
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from segflow.config import PARAMS_FILE, Params, ValidateConfig, load_params
from segflow.contracts import ContractResult, check_manifest, gx_context
from segflow.data_docs import write_data_docs
from segflow.errors import SegflowError
from segflow.io import write_json

if TYPE_CHECKING:
    from segflow.data.acquire import ArchiveLimits

LAYOUTS = ("auto", "msd", "folders2d")
FINDING_COLUMNS = ["case_id", "file", "rule", "severity", "message"]
SUMMARY_CASES = 8  # quarantined cases listed by name in the summary; the rest are counted


class UnusableInput(SegflowError):
    """The delivery cannot be validated at all (missing, unreadable, unsafe): exit code 2."""

    exit_code = 2

    def __init__(self, path: Path | str, rule: str, reason: str, action: str = "validate"):
        self.path, self.rule = Path(path), rule
        super().__init__(f"cannot {action} {path} [{rule}]: {reason}")


@dataclass(frozen=True)
class Validation:
    """The contracts' verdict on a manifest, with the GX context that holds its suites and
    results (for Data Docs)."""

    result: ContractResult
    gx_context: Any


@dataclass(frozen=True)
class DeliveryVerdict:
    exit_code: int
    summary: str
    report: Path


# --- checks --------------------------------------------------------------------------------


def run_checks(manifest: pd.DataFrame, declared_labels: list[int], max_dim: int, min_cases: int,
               **options) -> Validation:
    """`check_manifest` in a GX context of our own, kept so Data Docs show exactly this run.
    `options` are `check_manifest`'s keyword arguments (folds, tolerances, outlier_z, ...)."""
    context = gx_context()
    result = check_manifest(manifest, declared_labels, max_dim, min_cases, context=context, **options)
    return Validation(result, context)


def write_docs(checked: Validation, dest: Path, headline: str) -> Path:
    """Data Docs of a validation (see `segflow.data_docs`); returns their index.html."""
    findings = findings_frame(checked.result).to_dict("records")
    return write_data_docs(checked.gx_context, checked.result.gx_results, findings, dest, headline)


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


# --- a delivery outside the pipeline ---------------------------------------------------------


def validate_delivery(data: Path, report: Path, *, layout: str = "auto", min_cases: int | None = None,
                      max_dim: int | None = None, strict: bool = False,
                      folders: FolderLayout | None = None,
                      archive_limits: ArchiveLimits | None = None) -> DeliveryVerdict:
    """Validate the delivery at `data` (folder or archive) and write the JSON report to `report`.

    Exit code 0 when nothing is wrong, 1 when a case is quarantined or the delivery has a
    dataset-level error (with `strict`, also on any warning). Raises `UnusableInput` when the
    delivery cannot be read at all, or `report` cannot be written (checked first, before the
    slow part). Limits not given come from `delivery_limits` and `delivery_archive_limits`.
    """
    from segflow.data.manifest import build_manifest

    check_report_path(Path(report))
    min_cases, max_dim = delivery_limits(min_cases, max_dim)
    folders = folders or FolderLayout()
    limits = archive_limits or delivery_archive_limits()
    with opened_delivery(Path(data), marker_for(layout, folders), limits) as root:
        dataset = read_delivery(root, layout, shown=Path(data), folders=folders)
        checked = run_checks(build_manifest(dataset), sorted(dataset.labels), max_dim, min_cases)
    reasons = stop_reasons(checked.result, stop_on_quarantine=True, stop_on_warning=strict)
    write_json(report, build_report(checked.result, reasons, strict, source=Path(data).resolve()))
    return DeliveryVerdict(1 if reasons else 0, summary(checked.result, reasons), Path(report))


def check_report_path(report: Path) -> None:
    """Refuse a report path that cannot become a file (`UnusableInput`, rule `report_path`)."""
    problem = _report_path_problem(report)
    if problem:
        raise UnusableInput(report, "report_path", problem, action="write the report to")


def _report_path_problem(report: Path) -> str | None:
    """Why no file can be written at `report`: a folder, a path below a file, or a folder this
    process may not write to; None when it can."""
    if report.is_dir():
        return "it is a folder; give a file name such as report.json"
    existing = next(parent for parent in report.absolute().parents if parent.exists())
    if not existing.is_dir():
        return f"{existing} is a file, so nothing can be written below it"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"no permission to write in {existing}"
    return None


def parse_mask_values(text: str) -> tuple[int, ...]:
    """`--mask-values 0,255` -> (0, 255); a value that is no whole number raises ValueError."""
    values = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in values if not v.lstrip("+-").isdigit()]
    if bad:
        raise ValueError(f"{bad[0]!r} is not a whole number; give the raw mask values as integers "
                         "separated by commas, e.g. 0,255")
    return tuple(int(v) for v in values)


def _project_params(start: Path | None = None) -> Params | None:
    """params.yaml of the segflow project around `start` (default: cwd), or None outside one."""
    from segflow.env import PROJECT_MARKERS, find_project_root

    root = find_project_root(start)
    if all((root / marker).is_file() for marker in PROJECT_MARKERS):
        return load_params(root / PARAMS_FILE)
    return None


def delivery_limits(min_cases: int | None, max_dim: int | None, start: Path | None = None) -> tuple[int, int]:
    """(min_cases, max_dim): given values win, then params.yaml's `validate` section when run
    inside a segflow project, then `ValidateConfig`'s defaults."""
    params = _project_params(start)
    if params is not None:
        base = params.validate_.min_cases, params.validate_.max_dim
    else:
        fields = ValidateConfig.model_fields
        base = fields["min_cases"].default, fields["max_dim"].default
    return (base[0] if min_cases is None else min_cases), (base[1] if max_dim is None else max_dim)


def delivery_archive_limits(start: Path | None = None) -> ArchiveLimits:
    """How far a delivered archive may expand: params.yaml's `data.archive_max_*` inside a
    segflow project, else their defaults."""
    from segflow.data.acquire import ArchiveLimits

    params = _project_params(start)
    return ArchiveLimits.of(params.data) if params is not None else ArchiveLimits()


@dataclass(frozen=True)
class FolderLayout:
    """Where a 2D folder delivery keeps its pairs, and the raw mask values it may hold."""

    image_dir: str = "train/image"
    label_dir: str = "train/label"
    mask_values: tuple[int, ...] = ()


def marker_for(layout: str, folders: FolderLayout) -> str:
    """The path that marks the dataset folder inside an archive."""
    return folders.image_dir if layout == "folders2d" else "dataset.json"


@contextmanager
def opened_delivery(data: Path, marker: str = "dataset.json",
                    limits: ArchiveLimits | None = None) -> Iterator[Path]:
    """The delivery's dataset folder: `data` itself, or the one folder holding `marker` inside
    the archive `data`, safely extracted (within the `ArchiveLimits` `limits`) to a temporary
    folder for the block."""
    if data.is_dir():
        yield data
        return
    if not data.exists():
        raise UnusableInput(data, "data_exists", "no such file or folder")
    with tempfile.TemporaryDirectory(prefix="segflow-delivery-") as tmp:
        yield _extract_delivery(data, Path(tmp), marker, limits)


def _is_archive(path: Path) -> bool:
    try:
        return zipfile.is_zipfile(path) or tarfile.is_tarfile(path)
    except OSError:
        return False


def _archive_rule(exc: Exception) -> str:
    """The rule an extraction error breaks: too large, unreadable (a cause: the archive broke)
    or an unsafe member (refused by the checks)."""
    from segflow.data.acquire import ArchiveTooLarge

    if isinstance(exc, ArchiveTooLarge):
        return "archive_size"
    return "archive_readable" if exc.__cause__ is not None else "archive_members_safe"


def _extract_delivery(archive: Path, dest: Path, marker: str, limits: ArchiveLimits | None = None) -> Path:
    from segflow.data.acquire import AcquireError, find_dataset_folder, safe_extract

    if not _is_archive(archive):
        raise UnusableInput(archive, "archive_readable", "not a readable tar, tar.gz or zip archive")
    try:
        safe_extract(archive, dest, limits=limits)
    except AcquireError as exc:
        raise UnusableInput(archive, _archive_rule(exc), str(exc)) from None
    try:
        return find_dataset_folder(dest, str(archive), marker)
    except AcquireError as exc:
        raise UnusableInput(archive, "dataset_json", str(exc)) from None


def read_delivery(root: Path, layout: str, shown: Path, folders: FolderLayout | None = None):
    """Read the dataset folder `root`; `shown` names the delivery in messages (the archive, when
    `root` is a temporary extraction). "auto" reads MSD when there is a dataset.json, else 2D
    folders when `folders.image_dir` exists."""
    from segflow.data.msd import LayoutError, read_msd_dataset

    folders = folders or FolderLayout()
    if layout not in LAYOUTS:
        raise UnusableInput(shown, "layout", f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if layout == "folders2d" or (layout == "auto" and not (root / "dataset.json").exists()
                                 and (root / folders.image_dir).is_dir()):
        return read_folder_delivery(root, shown, folders)
    try:
        return read_msd_dataset(root)
    except LayoutError as exc:
        reason = str(exc).replace(str(root), str(shown) if shown.is_dir() else f"{shown}!{root.name}")
        raise UnusableInput(shown, "dataset_json", reason) from None


def read_folder_delivery(root: Path, shown: Path, folders: FolderLayout):
    """A 2D image/mask folder delivery; its mask values must be given (no dataset.json says them)."""
    from segflow.data.folders2d import read_folder_dataset

    if not folders.mask_values:
        raise UnusableInput(shown, "mask_values", "a 2D folder delivery needs --mask-values (e.g. 0,255)")
    if not (root / folders.image_dir).is_dir():
        raise UnusableInput(shown, "layout", f"no {folders.image_dir} folder for a 2D folder delivery")
    labels = {value: str(value) for value in folders.mask_values}
    return read_folder_dataset(root, image_dir=folders.image_dir, label_dir=folders.label_dir, labels=labels)
