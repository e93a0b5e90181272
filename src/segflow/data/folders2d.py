"""Read a 2D delivery laid out as two folders of image and mask files (PNG/TIF) paired by stem.

E.g. ISBI 2012: `train/image/0.png` with `train/label/0.png`. Each image is a case; an image
without a mask is a case whose label is missing, a mask without an image is an orphan, exactly
as for MSD, so the same manifest and contracts judge both layouts.
"""

from __future__ import annotations

from pathlib import Path

from segflow.data.formats import PLANAR_FORMATS, SUFFIXES
from segflow.data.msd import CaseFiles, LayoutError, MsdDataset, split_suffix

PLANAR_SUFFIXES = tuple(ending for fmt in PLANAR_FORMATS for ending in SUFFIXES[fmt])


def _by_stem(root: Path, folder: str) -> dict[str, list[str]]:
    """Stem -> the image files (relative POSIX paths) carrying it, in name order."""
    found: dict[str, list[str]] = {}
    for path in sorted((root / folder).iterdir()):
        if path.is_file() and not path.name.startswith(".") and path.name.lower().endswith(PLANAR_SUFFIXES):
            stem = split_suffix(path.name, PLANAR_SUFFIXES)[0]
            found.setdefault(stem, []).append(f"{folder}/{path.name}")
    return found


def _natural_key(stem: str) -> tuple:
    """'2' before '10': numbered slices keep their order."""
    return (0, int(stem), stem) if stem.isdigit() else (1, 0, stem)


def _expected_mask(label_dir: str, image: str) -> str:
    """Where the mask of `image` should be, so a missing one is named in the finding."""
    return f"{label_dir}/{Path(image).name}"


def _cases(images: dict[str, list[str]], masks: dict[str, list[str]], label_dir: str) -> list[CaseFiles]:
    """One case per image file (a stem twice, e.g. 0.png and 0.tif, gives a duplicate case id);
    masks no image uses become orphans after the listed cases."""
    listed = [
        CaseFiles(stem, image, (masks.get(stem) or [_expected_mask(label_dir, image)])[0], listed=True)
        for stem in sorted(images, key=_natural_key)
        for image in images[stem]
    ]
    used = {case.label for case in listed}
    orphans = [
        CaseFiles(stem, None, mask, listed=False)
        for stem in sorted(masks, key=_natural_key)
        for mask in masks[stem]
        if mask not in used
    ]
    return listed + orphans


def read_folder_dataset(root: Path, image_dir: str = "train/image", label_dir: str = "train/label",
                        labels: dict[int, str] | None = None) -> MsdDataset:
    """Pair `image_dir/N.png` with `label_dir/N.png` below `root`.

    Args:
        labels: raw mask value -> name (e.g. {0: "membrane", 255: "cell"}); these raw values are
            the declared labels the contracts check masks against.
    """
    if not labels:
        raise LayoutError("a 2D folder dataset needs `labels` (raw mask value -> name)")
    root = Path(root)
    if not (root / image_dir).is_dir():
        raise LayoutError(f"{root / image_dir}: missing; a 2D folder dataset needs its image folder")
    masks = _by_stem(root, label_dir) if (root / label_dir).is_dir() else {}
    return MsdDataset(
        root=root,
        name=root.name,
        labels={int(k): str(v) for k, v in labels.items()},
        modality={},
        cases=tuple(_cases(_by_stem(root, image_dir), masks, label_dir)),
        descriptor=image_dir,
        layout="folders2d",
    )
