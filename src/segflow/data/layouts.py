"""Which layout a dataset folder is in, and its one reader whatever the layout.

`data.layout: auto` (the default) looks at the folder: a dataset.json with a `training` list is
MSD / nnU-Net v1, one with `channel_names` and `file_ending` is an nnU-Net v2 raw dataset, and
without a dataset.json an image folder (`data.image_dir`) holds 2D image/mask pairs. Every reader
returns the same `MsdDataset`, so the manifest, the contracts and the stages after it never ask
which layout a case came from.
"""

from __future__ import annotations

import json
from pathlib import Path

from segflow.data.msd import LayoutError, MsdDataset, read_msd_dataset

LAYOUTS = ("msd", "nnunetv2", "folders2d")


def detect_layout(root: Path, image_dir: str = "train/image") -> str:
    """The layout of the dataset folder `root`; a LayoutError says what was looked for, and where."""
    descriptor = root / "dataset.json"
    if descriptor.is_file():
        try:
            data = json.loads(descriptor.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise LayoutError(f"{descriptor}: not readable JSON ({exc})") from None
        if isinstance(data, dict) and "training" in data:
            return "msd"
        if isinstance(data, dict) and "channel_names" in data:
            return "nnunetv2"
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise LayoutError(f"{descriptor}: neither MSD (a 'training' list) nor nnU-Net v2 ('channel_names', "
                          f"'labels', 'file_ending'); found {keys}")
    if (root / image_dir).is_dir():
        return "folders2d"
    if not root.is_dir():
        raise LayoutError(f"{root}: no such dataset folder")
    raise LayoutError(f"{root}: no dataset layout found: looked for dataset.json (MSD or nnU-Net v2) and for "
                      f"the 2D image folder {image_dir} (data.image_dir)")


def read_layout(root: Path, layout: str, image_dir: str = "train/image", label_dir: str = "train/label",
                labels: dict[int, str] | None = None) -> MsdDataset:
    """The dataset below `root` in `layout` ("auto": detected). `labels` are the raw mask values
    of a 2D folder dataset (no descriptor declares them)."""
    from segflow.data.folders2d import read_folder_dataset
    from segflow.data.nnunet_v2 import read_nnunet_v2_dataset

    layout = detect_layout(root, image_dir) if layout == "auto" else layout
    if layout == "msd":
        return read_msd_dataset(root)
    if layout == "nnunetv2":
        return read_nnunet_v2_dataset(root)
    if layout == "folders2d":
        return read_folder_dataset(root, image_dir=image_dir, label_dir=label_dir, labels=labels)
    raise LayoutError(f"unknown layout {layout!r}; choose auto or one of {', '.join(LAYOUTS)}")
