"""Read the Medical Segmentation Decathlon (MSD / nnU-Net v1) folder layout.

dataset.json lists training cases as {"image": "./imagesTr/x.nii.gz", "label": ...}; files on
disk that it does not list are kept as orphans so validation can report them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

NIFTI_SUFFIXES = (".nii.gz", ".nii")


class LayoutError(ValueError):
    """The dataset folder is unusable as a whole (no dataset.json, unreadable JSON, ...)."""


@dataclass(frozen=True)
class CaseFiles:
    """One case as delivered: paths are relative to the dataset root, as POSIX strings."""

    case_id: str
    image: str | None
    label: str | None
    listed: bool


@dataclass(frozen=True)
class MsdDataset:
    root: Path
    name: str
    labels: dict[int, str]
    modality: dict[int, str]
    cases: tuple[CaseFiles, ...]


def case_id_from_path(path: str) -> str:
    """'./imagesTr/hippocampus_004.nii.gz' -> 'hippocampus_004'."""
    name = Path(path).name
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _load_descriptor(root: Path) -> dict:
    descriptor = root / "dataset.json"
    if not descriptor.is_file():
        raise LayoutError(f"{descriptor}: missing; an MSD dataset folder needs a dataset.json")
    try:
        data = json.loads(descriptor.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise LayoutError(f"{descriptor}: not readable JSON ({exc})") from None
    entries = data.get("training") if isinstance(data, dict) else None
    if (not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries)
            or not isinstance(data.get("labels"), dict)):
        raise LayoutError(f"{descriptor}: needs a 'training' list and a 'labels' mapping")
    return data


def _normalise(path: str) -> str:
    return Path(path).as_posix().removeprefix("./")


def _listed_cases(entries: list) -> list[CaseFiles]:
    cases = []
    for entry in entries:
        image, label = _normalise(entry.get("image", "")), _normalise(entry.get("label", ""))
        case_id = case_id_from_path(image or label)
        cases.append(CaseFiles(case_id, image or None, label or None, listed=True))
    return cases


def _files_on_disk(root: Path, folder: str) -> set[str]:
    found = root / folder
    if not found.is_dir():
        return set()
    return {
        f"{folder}/{p.name}"
        for p in found.iterdir()
        if p.is_file() and p.name.endswith(NIFTI_SUFFIXES) and not p.name.startswith(".")
    }


def _orphans(root: Path, listed: list[CaseFiles]) -> list[CaseFiles]:
    referenced = {c.image for c in listed} | {c.label for c in listed}
    orphans = []
    for folder, is_image in (("imagesTr", True), ("labelsTr", False)):
        for path in sorted(_files_on_disk(root, folder) - referenced):
            image, label = (path, None) if is_image else (None, path)
            orphans.append(CaseFiles(case_id_from_path(path), image, label, listed=False))
    return orphans


def read_msd_dataset(root: Path) -> MsdDataset:
    """Parse dataset.json and the imagesTr/labelsTr folders below `root`."""
    data = _load_descriptor(root)
    listed = _listed_cases(data["training"])
    return MsdDataset(
        root=root,
        name=str(data.get("name", root.name)),
        labels={int(k): str(v) for k, v in data["labels"].items()},
        modality={int(k): str(v) for k, v in data.get("modality", {}).items()},
        cases=tuple(listed + _orphans(root, listed)),
    )
