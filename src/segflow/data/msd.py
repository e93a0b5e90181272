"""Read the Medical Segmentation Decathlon (MSD / nnU-Net v1) folder layout.

dataset.json lists training cases as {"image": "./imagesTr/x.nii.gz", "label": ...}; files on
disk that it does not list are kept as orphans so validation can report them. Multi-channel
cases come either as one 4D NIfTI (channels last, as MSD BraTS) or, the nnU-Net way, as one file
per channel (`x_0000.nii.gz`, `x_0001.nii.gz`) while dataset.json still names `x.nii.gz`.
An entry pointing outside the dataset folder (`../`, an absolute path, or a symbolic link whose
target lies outside) is refused and never read.
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path

from segflow.data.regions import Regions

NIFTI_SUFFIXES = (".nii.gz", ".nii")
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")


class LayoutError(ValueError):
    """The dataset folder is unusable as a whole (no dataset.json, unreadable JSON, ...)."""


@dataclass(frozen=True)
class CaseFiles:
    """One case as delivered: paths are relative to the dataset root, as POSIX strings.

    `image` is the first (or only) image file; `image_channels` lists every channel file when the
    case has one file per channel (nnU-Net's `_0000`, `_0001`, ...).
    """

    case_id: str
    image: str | None
    label: str | None
    listed: bool
    image_channels: tuple[str, ...] = ()

    @property
    def channels(self) -> tuple[str, ...]:
        """Every image file of the case, in channel order."""
        return self.image_channels or ((self.image,) if self.image else ())


@dataclass(frozen=True)
class MsdDataset:
    """A delivery in any supported layout: declared labels, modalities and its cases.

    `descriptor` names what lists the cases (dataset.json, or the image folder of a 2D layout),
    so findings about the listing can point at it.
    """

    root: Path
    name: str
    labels: dict[int, str]
    modality: dict[int, str]
    cases: tuple[CaseFiles, ...]
    descriptor: str = "dataset.json"
    layout: str = "msd"  # as detected: msd | nnunetv2 | folders2d
    ignore_label: int | None = None  # label value left out of the loss and metrics (nnU-Net's "ignore")
    # What only the descriptor can get wrong, for the validate stage's descriptor rules (column -> value).
    facts: dict = field(default_factory=dict)
    regions: Regions | None = None  # nnU-Net's region-based labels (segflow.data.regions)

    @property
    def class_labels(self) -> dict[int, str]:
        """The classes the network outputs: the declared labels without the ignore label, or for
        region-based labels background then one entry per region (an output channel each)."""
        if self.regions is not None:
            return {0: "background", **{i: name for i, name in enumerate(self.regions.names, start=1)}}
        return {value: name for value, name in self.labels.items() if value != self.ignore_label}


def split_suffix(name: str, suffixes: tuple[str, ...] = NIFTI_SUFFIXES) -> tuple[str, str]:
    """'x/case.nii.gz' -> ('x/case', '.nii.gz'); an unknown ending leaves the name whole."""
    for suffix in suffixes:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)], name[-len(suffix):]
    return name, ""


_CHANNEL_SUFFIX = re.compile(r"^(.+)_(\d{4})$")


def channel_of(stem: str) -> tuple[str, int | None]:
    """nnU-Net's channel file naming: 'case_0001' -> ('case', 1); any other stem -> (stem, None)."""
    found = _CHANNEL_SUFFIX.match(stem)
    return (found.group(1), int(found.group(2))) if found else (stem, None)


def case_id_from_path(path: str) -> str:
    """'./imagesTr/hippocampus_004.nii.gz' -> 'hippocampus_004'."""
    return split_suffix(Path(path).name)[0]


def _load_descriptor(root: Path) -> dict:
    descriptor = root / "dataset.json"
    target = escaping_link(root, "dataset.json")
    if target is not None:
        raise LayoutError(f"{descriptor}: a link to {target}, outside the dataset folder; it is not read")
    if not descriptor.is_file():
        raise LayoutError(f"{descriptor}: missing; an MSD dataset folder needs a dataset.json")
    try:
        data = json.loads(descriptor.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LayoutError(f"{descriptor}: not readable JSON ({exc})") from None
    entries = data.get("training") if isinstance(data, dict) else None
    if (not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries)
            or not isinstance(data.get("labels"), dict)):
        raise LayoutError(f"{descriptor}: needs a 'training' list and a 'labels' mapping")
    return data


def confined_path(entry: str) -> str | None:
    """The entry as a clean relative POSIX path, or None when it would leave the dataset root.

    Checked lexically, so dataset.json itself can never steer reading outside the delivery;
    `escaping_link` then checks where links on the way lead.
    """
    path = entry.replace("\\", "/")
    if path.startswith("/") or _WINDOWS_DRIVE.match(path):
        return None
    normal = posixpath.normpath(path)
    if normal == ".." or normal.startswith("../"):
        return None
    return normal


def escaping_link(root: Path, rel: str, allowed: tuple[Path, ...] = ()) -> Path | None:
    """Where `root/rel` really lies when a symbolic link on the way leads outside `root` (and
    outside every `allowed` folder, e.g. a DVC cache that links files in); None when it stays.

    Only the links are read (as `os.readlink` does), never the file they point to.
    """
    inside = [Path(folder).resolve() for folder in (root, *allowed)]
    try:
        target = (root / rel).resolve()
    except (OSError, RuntimeError):  # a loop of links leads to no file at all: reported missing
        return None
    return None if any(target.is_relative_to(folder) for folder in inside) else target


def _entry(entry: dict, key: str) -> str | None:
    """One path of a training entry: cleaned when confined to the root, raw (for the report) when
    not, None when absent. The manifest re-checks confinement before opening anything."""
    value = entry.get(key)
    if not isinstance(value, str) or not value.strip():
        return None
    return confined_path(value) or value


def channel_files(root: Path, image: str, n_modalities: int) -> tuple[str, ...]:
    """The files meant by a listed image: itself when it exists, else nnU-Net's `_0000`, `_0001`...

    With modalities declared, exactly that many channel files are expected (a missing one is
    then reported as a missing image file); without, the contiguous run found on disk is used.
    """
    if (root / image).is_file():
        return (image,)
    stem, suffix = split_suffix(image)
    if not (root / f"{stem}_0000{suffix}").is_file():
        return (image,)
    count = n_modalities or _contiguous_channels(root, stem, suffix)
    return tuple(f"{stem}_{index:04d}{suffix}" for index in range(count))


def _contiguous_channels(root: Path, stem: str, suffix: str) -> int:
    count = 0
    while (root / f"{stem}_{count:04d}{suffix}").is_file():
        count += 1
    return count


def _listed_case(root: Path, index: int, entry: dict, n_modalities: int) -> CaseFiles:
    """The case of the index-th training entry. Its id comes from the image name (from the label
    when the image path is refused, so the finding names the case rather than a stray file;
    from the entry's position when it names no path at all)."""
    image, label = _entry(entry, "image"), _entry(entry, "label")
    safe = [p for p in (image, label) if p and confined_path(p)]
    named = (safe or [p for p in (image, label) if p])
    case_id = case_id_from_path(named[0]) if named else f"training[{index}]"
    channels = channel_files(root, image, n_modalities) if image in safe else ()
    return CaseFiles(case_id, channels[0] if channels else image, label, listed=True, image_channels=channels)


def _files_on_disk(root: Path, folder: str, suffixes: tuple[str, ...] = NIFTI_SUFFIXES) -> set[str]:
    found = root / folder
    if not found.is_dir():
        return set()
    return {
        f"{folder}/{p.name}"
        for p in found.iterdir()
        if p.is_file() and p.name.lower().endswith(suffixes) and not p.name.startswith(".")
    }


def _orphans(root: Path, listed: list[CaseFiles]) -> list[CaseFiles]:
    referenced = {path for c in listed for path in (*c.channels, c.label) if path}
    orphans = []
    for folder, is_image in (("imagesTr", True), ("labelsTr", False)):
        for path in sorted(_files_on_disk(root, folder) - referenced):
            image, label = (path, None) if is_image else (None, path)
            orphans.append(CaseFiles(case_id_from_path(path), image, label, listed=False))
    return orphans


def _int_keyed(mapping: dict) -> dict[int, str]:
    try:
        return {int(k): str(v) for k, v in mapping.items()}
    except (TypeError, ValueError):
        raise LayoutError(f"dataset.json: keys must be integers, got {sorted(mapping)}") from None


def read_msd_dataset(root: Path) -> MsdDataset:
    """Parse dataset.json and the imagesTr/labelsTr folders below `root`."""
    data = _load_descriptor(root)
    modality = _int_keyed(data["modality"] if isinstance(data.get("modality"), dict) else {})
    listed = [_listed_case(root, i, entry, len(modality)) for i, entry in enumerate(data["training"])]
    return MsdDataset(
        root=root,
        name=str(data.get("name", root.name)),
        labels=_int_keyed(data["labels"]),
        modality=modality,
        cases=tuple(listed + _orphans(root, listed)),
    )
