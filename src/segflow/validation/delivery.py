"""`segflow validate`: a new delivery (folder or archive), checked with the pipeline's data
contracts (`report`) without running the pipeline: extracted safely, read, judged, reported."""

from __future__ import annotations

import os
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from segflow.config import PARAMS_FILE, Params, ValidateConfig, load_params
from segflow.errors import SegflowError
from segflow.files import write_json
from segflow.validation.checks import run_checks
from segflow.validation.report import build_report, stop_reasons, summary

if TYPE_CHECKING:
    from segflow.data.acquire import ArchiveLimits

LAYOUTS = ("auto", "msd", "nnunetv2", "folders2d")


class UnusableInput(SegflowError):
    """The delivery cannot be validated at all (missing, unreadable, unsafe): exit code 2."""

    exit_code = 2

    def __init__(self, path: Path | str, rule: str, reason: str, action: str = "validate"):
        self.path, self.rule = Path(path), rule
        super().__init__(f"cannot {action} {path} [{rule}]: {reason}")


@dataclass(frozen=True)
class DeliveryVerdict:
    exit_code: int
    summary: str
    report: Path


# --- a delivery outside the pipeline ---------------------------------------------------------


def validate_delivery(data: Path, report: Path, *, layout: str = "auto", min_cases: int | None = None,
                      max_dim: int | None = None, strict: bool = False,
                      folders: FolderLayout | None = None,
                      archive_limits: ArchiveLimits | None = None) -> DeliveryVerdict:
    """Validate the delivery at `data` (folder or archive) and write the JSON report to `report`.

    Exit code 0 when nothing is wrong, 1 when a case is quarantined or the delivery has a
    dataset-level error (with `strict`, also on any warning). Raises `UnusableInput` when the
    delivery cannot be read at all, or `report` cannot be written (checked first, before the
    slow part). Thresholds and limits not given come from `delivery_rules` and `delivery_archive_limits`.
    """
    from segflow.data.manifest import build_manifest

    check_report_path(Path(report))
    rules = delivery_rules(min_cases, max_dim)
    folders = folders or FolderLayout()
    limits = archive_limits or delivery_archive_limits()
    with opened_delivery(Path(data), marker_for(layout, folders), limits) as root:
        dataset = read_delivery(root, layout, shown=Path(data), folders=folders)
        checked = run_checks(build_manifest(dataset), sorted(dataset.labels), rules, ignore_label=dataset.ignore_label)
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


def delivery_rules(min_cases: int | None = None, max_dim: int | None = None, start: Path | None = None
                   ) -> ValidateConfig:
    """The thresholds a delivery is judged by: params.yaml's `validate` section when run inside a
    segflow project (so a delivery gets the findings the pipeline would give it), else
    `ValidateConfig`'s defaults; `min_cases`/`max_dim` given on the command line win."""
    params = _project_params(start)
    rules = params.validate_ if params is not None else ValidateConfig()
    given = {"min_cases": min_cases, "max_dim": max_dim}
    return rules.model_copy(update={k: v for k, v in given.items() if v is not None})


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
    `root` is a temporary extraction). "auto" detects the layout (segflow.data.layouts): MSD or
    nnU-Net v2 by its dataset.json, else 2D folders when `folders.image_dir` exists."""
    from segflow.data.layouts import detect_layout, read_layout
    from segflow.data.msd import LayoutError

    folders = folders or FolderLayout()
    if layout not in LAYOUTS:
        raise UnusableInput(shown, "layout", f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    try:
        kind = detect_layout(root, folders.image_dir) if layout == "auto" else layout
        if kind == "folders2d":
            return read_folder_delivery(root, shown, folders)
        return read_layout(root, kind)
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
