"""Read an nnU-Net v2 raw dataset (its `dataset_format.md`).

    Dataset001_Name/
      dataset.json    {"channel_names": {"0": "T2", "1": "ADC"}, "labels": {"background": 0, "PZ": 1},
                       "numTraining": 32, "file_ending": ".nii.gz"}
      imagesTr/       {case}_{XXXX}{file_ending}: one file per channel, XXXX = the channel's index
      labelsTr/       {case}{file_ending}
      imagesTs/       optional, for `segflow predict`
      splits_final.json  optional here: the folds (nnU-Net keeps it in its preprocessed folder)

Cases are whatever the folders hold (nnU-Net lists none): every case id found in imagesTr or
labelsTr is a case, so a missing channel or label file is a finding of that case. Files in those
folders that do not follow the naming (another file ending, no `_XXXX`) are orphans. What only
the descriptor can get wrong (labels not consecutive from 0, `numTraining` disagreeing with the
folders, a `file_ending` no file has) goes to the validate stage as descriptor facts, so it is
reported by the same contracts as every other finding. An optional `dataset` mapping
({case: {"images": [...], "label": ...}}) lists the files explicitly, as nnU-Net allows.

An `ignore` label (nnU-Net: the name "ignore", the highest value) marks voxels left out of the
loss and the metrics. Region-based labels (a label mapped to a list of values, with
`regions_class_order`) train one sigmoid output per region (segflow.data.regions).
"""

from __future__ import annotations

import json
from pathlib import Path

from segflow.data.formats import IMAGE_SUFFIXES
from segflow.data.msd import CaseFiles, LayoutError, MsdDataset, channel_of, confined_path, escaping_link, split_suffix
from segflow.data.regions import Regions

REQUIRED_KEYS = ("channel_names", "labels", "file_ending")
IGNORE_LABEL = "ignore"


def _int_value(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise LayoutError(f"dataset.json: label {name!r} must map to an integer, got {value!r}")
    return value


def _region_values(name: str, value: object) -> tuple[int, ...]:
    """A region's label values: a list of integers (a plain integer is a region of one value)."""
    values = value if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise LayoutError(f"dataset.json: region {name!r} covers no label value")
    return tuple(_int_value(name, v) for v in values)


def read_regions(labels: dict, class_order: object) -> tuple[dict[int, str], Regions, int | None]:
    """Region-based labels: (every label value -> a name, the regions, the ignore value)."""
    ignore = labels.get(IGNORE_LABEL)
    declared = {str(n): _region_values(str(n), v) for n, v in labels.items() if n != IGNORE_LABEL}
    if declared.pop("background", None) not in ((0,), None):
        raise LayoutError("dataset.json: with region-based labels, 'background' must be 0")
    if not isinstance(class_order, list) or len(class_order) != len(declared):
        raise LayoutError(f"dataset.json: region-based labels need 'regions_class_order', one label value per "
                          f"region ({len(declared)}: {', '.join(declared)}); got {class_order!r}")
    regions = Regions(tuple(declared), tuple(declared.values()),
                      tuple(_int_value("regions_class_order", v) for v in class_order))
    by_value = {v: f"label {v}" for v in regions.label_values} | {0: "background"}
    if ignore is not None:
        ignore = _int_value(IGNORE_LABEL, ignore)
        if ignore <= max(by_value):
            raise LayoutError(f"dataset.json: the ignore label ({ignore}) must have the highest value "
                              f"({max(by_value)} is not lower)")
        by_value[ignore] = IGNORE_LABEL
    return dict(sorted(by_value.items())), regions, ignore


def is_region_based(labels: object) -> bool:
    return isinstance(labels, dict) and any(isinstance(v, (list, tuple)) for v in labels.values())


def read_labels(labels: object) -> tuple[dict[int, str], int | None]:
    """nnU-Net v2's name -> value labels as value -> name, and the ignore label's value (or None)."""
    if not isinstance(labels, dict) or not labels:
        raise LayoutError("dataset.json: 'labels' must map label names to integers, e.g. {\"background\": 0}")
    by_value = {}
    for name, value in labels.items():
        number = _int_value(str(name), value)
        if number in by_value:
            raise LayoutError(f"dataset.json: labels {by_value[number]!r} and {name!r} both have the value {number}")
        by_value[number] = str(name)
    ignore = labels.get(IGNORE_LABEL)
    if ignore is not None and ignore != max(by_value):
        raise LayoutError(f"dataset.json: the ignore label ({ignore}) must have the highest value "
                          f"({max(by_value)} is higher)")
    return dict(sorted(by_value.items())), ignore


def consecutive_from_zero(values: list[int]) -> bool:
    return sorted(values) == list(range(len(values)))


def _channels(descriptor: dict) -> dict[int, str]:
    names = descriptor["channel_names"]
    try:
        channels = {int(k): str(v) for k, v in names.items()}
    except (AttributeError, TypeError, ValueError):
        raise LayoutError(f"dataset.json: 'channel_names' must map channel indices to names, got {names!r}") from None
    if not channels or not consecutive_from_zero(list(channels)):
        raise LayoutError(f"dataset.json: 'channel_names' must number the channels 0, 1, ...; got {sorted(channels)}")
    return dict(sorted(channels.items()))


def _file_ending(descriptor: dict) -> str:
    ending = descriptor["file_ending"]
    if not isinstance(ending, str) or not ending.startswith(".") or "/" in ending:
        raise LayoutError(f"dataset.json: 'file_ending' must be a file ending such as \".nii.gz\", got {ending!r}")
    return ending


def _image_files(root: Path, folder: str) -> list[str]:
    """Every image-like file name in `folder` (hidden files skipped)."""
    found = root / folder
    if not found.is_dir():
        return []
    return sorted(p.name for p in found.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(IMAGE_SUFFIXES))


def _folder_cases(root: Path, ending: str, n_channels: int) -> tuple[list[CaseFiles], list[CaseFiles]]:
    """(cases, orphans) from imagesTr/labelsTr named the nnU-Net way."""
    images, orphans = {}, []
    for name in _image_files(root, "imagesTr"):
        case, index = channel_of(name[: -len(ending)]) if name.endswith(ending) else (name, None)
        if index is None:
            orphans.append(CaseFiles(split_suffix(name, IMAGE_SUFFIXES)[0], f"imagesTr/{name}", None, listed=False))
        else:
            images.setdefault(case, set()).add(index)
    labels = {}
    for name in _image_files(root, "labelsTr"):
        if name.endswith(ending):
            labels[name[: -len(ending)]] = f"labelsTr/{name}"
        else:
            orphans.append(CaseFiles(split_suffix(name, IMAGE_SUFFIXES)[0], None, f"labelsTr/{name}", listed=False))
    cases = []
    for case in sorted(set(images) | set(labels)):
        extra = sorted(images.get(case, set()) - set(range(n_channels)))
        orphans += [CaseFiles(case, f"imagesTr/{case}_{i:04d}{ending}", None, listed=False) for i in extra]
        channels = tuple(f"imagesTr/{case}_{i:04d}{ending}" for i in range(n_channels))
        cases.append(CaseFiles(case, channels[0], labels.get(case, f"labelsTr/{case}{ending}"), listed=True,
                               image_channels=channels))
    return cases, orphans


def _listed_cases(listing: object) -> list[CaseFiles]:
    """The optional `dataset` mapping: {case: {"images": [paths], "label": path}}, relative paths."""
    if not isinstance(listing, dict):
        raise LayoutError("dataset.json: 'dataset' must map case ids to {\"images\": [...], \"label\": ...}")
    cases = []
    for case, entry in sorted(listing.items()):
        images = entry.get("images") if isinstance(entry, dict) else None
        label = entry.get("label") if isinstance(entry, dict) else None
        if not isinstance(images, list) or not images or not all(isinstance(p, str) for p in images) \
                or not isinstance(label, str):
            raise LayoutError(f"dataset.json: dataset[{case!r}] needs an 'images' list and a 'label' path")
        channels = tuple(confined_path(p) or p for p in images)
        cases.append(CaseFiles(str(case), channels[0], confined_path(label) or label, listed=True,
                               image_channels=channels))
    return cases


def load_descriptor(root: Path) -> dict:
    """dataset.json as a dict; an unreadable or incomplete one is a LayoutError naming it."""
    path = root / "dataset.json"
    target = escaping_link(root, "dataset.json")
    if target is not None:
        raise LayoutError(f"{path}: a link to {target}, outside the dataset folder; it is not read")
    try:
        descriptor = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LayoutError(f"{path}: not readable JSON ({exc})") from None
    missing = [key for key in REQUIRED_KEYS if not isinstance(descriptor, dict) or key not in descriptor]
    if missing:
        raise LayoutError(f"{path}: an nnU-Net v2 dataset.json needs {', '.join(REQUIRED_KEYS)}; "
                          f"missing {', '.join(missing)}")
    return descriptor


def _declared_cases(descriptor: dict) -> int | None:
    value = descriptor.get("numTraining")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def read_nnunet_v2_dataset(root: Path) -> MsdDataset:
    """Parse an nnU-Net v2 raw dataset folder (see the module docstring)."""
    descriptor = load_descriptor(root)
    regions = None
    if is_region_based(descriptor["labels"]):
        labels, regions, ignore = read_regions(descriptor["labels"], descriptor.get("regions_class_order"))
    else:
        labels, ignore = read_labels(descriptor["labels"])
    channels, ending = _channels(descriptor), _file_ending(descriptor)
    if "dataset" in descriptor:
        cases, orphans = _listed_cases(descriptor["dataset"]), []
    else:
        cases, orphans = _folder_cases(root, ending, len(channels))
    facts = {
        "declared_cases": _declared_cases(descriptor),
        "labels_consecutive": consecutive_from_zero([v for v in labels if v != ignore]),
        "declared_label_values": json.dumps(sorted(labels)),
        "file_ending": ending,
        "file_ending_found": bool(cases) or not orphans,
    }
    return MsdDataset(root=root, name=str(descriptor.get("name", root.name)), labels=labels, modality=channels,
                      cases=tuple(cases + orphans), ignore_label=ignore, layout="nnunetv2", facts=facts,
                      regions=regions)
